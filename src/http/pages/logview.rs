//! A build log as the build page shows it: ANSI colours as styled spans,
//! one foldable section per step (found by the runner's own `==> step NAME:`
//! lines), `::group::` / `::endgroup::` folds, and numbered lines with
//! `#L123` anchors.
//!
//! Everything here is pushed text. Text only ever reaches the page through
//! maud's escaping; the only markup this module writes itself is class names
//! made from numbers. Colours are classes, never `style` attributes: the
//! pages' Content-Security-Policy allows no inline style, so 24-bit colours
//! are shown in the nearest colour of the 256-colour palette.

use crate::runner::log::times::{LineTimes, format_elapsed};
use maud::{Markup, html};
use std::fmt::Write as _;

/// A text style: what SGR sequences set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Style {
    /// Foreground, a 256-colour palette index.
    pub fg: Option<u8>,
    /// Background, a 256-colour palette index.
    pub bg: Option<u8>,
    pub bold: bool,
    pub dim: bool,
    pub italic: bool,
    pub underline: bool,
}

impl Style {
    /// The span's classes; empty for the default style.
    fn classes(&self) -> String {
        let mut c = String::new();
        if let Some(fg) = self.fg {
            let _ = write!(c, "f{fg} ");
        }
        if let Some(bg) = self.bg {
            let _ = write!(c, "b{bg} ");
        }
        for (on, name) in [
            (self.bold, "bo"),
            (self.dim, "di"),
            (self.italic, "it"),
            (self.underline, "un"),
        ] {
            if on {
                c.push_str(name);
                c.push(' ');
            }
        }
        c.pop();
        c
    }

    /// Applies one SGR sequence's parameters (`1;31`, `38;5;208`, ``).
    fn apply(&mut self, params: &str) {
        let nums: Vec<u16> = params
            .split([';', ':'])
            .map(|p| p.parse::<u16>().unwrap_or(0))
            .collect();
        let mut i = 0;
        while i < nums.len() {
            match nums[i] {
                0 => *self = Style::default(),
                1 => self.bold = true,
                2 => self.dim = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => (self.bold, self.dim) = (false, false),
                23 => self.italic = false,
                24 => self.underline = false,
                n @ 30..=37 => self.fg = Some((n - 30) as u8),
                39 => self.fg = None,
                n @ 40..=47 => self.bg = Some((n - 40) as u8),
                49 => self.bg = None,
                n @ 90..=97 => self.fg = Some((n - 90 + 8) as u8),
                n @ 100..=107 => self.bg = Some((n - 100 + 8) as u8),
                n @ (38 | 48) => {
                    let (colour, used) = extended_colour(&nums[i + 1..]);
                    if let Some(colour) = colour {
                        if n == 38 {
                            self.fg = Some(colour);
                        } else {
                            self.bg = Some(colour);
                        }
                    }
                    i += used;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// The colour of `5;N` or `2;R;G;B` (after a 38 or 48), and how many
/// parameters it used.
fn extended_colour(rest: &[u16]) -> (Option<u8>, usize) {
    match rest {
        [5, n, ..] => (u8::try_from(*n).ok(), 2),
        [2, r, g, b, ..] => (
            Some(nearest_256(
                (*r).min(255) as u8,
                (*g).min(255) as u8,
                (*b).min(255) as u8,
            )),
            4,
        ),
        [5] => (None, 1),
        [2, ..] => (None, rest.len()),
        _ => (None, 0),
    }
}

/// The levels of the 256-colour palette's 6×6×6 cube.
const CUBE: [u8; 6] = [0, 95, 135, 175, 215, 255];

/// The palette index (16..=255) nearest to an RGB colour: the nearest of
/// the cube and of the grey ramp.
pub fn nearest_256(r: u8, g: u8, b: u8) -> u8 {
    let level = |v: u8| {
        CUBE.iter()
            .enumerate()
            .min_by_key(|(_, l)| (i32::from(**l) - i32::from(v)).abs())
            .map(|(i, _)| i as u8)
            .unwrap_or(0)
    };
    let (ri, gi, bi) = (level(r), level(g), level(b));
    let cube = 16 + 36 * ri + 6 * gi + bi;
    let dist = |(x, y, z): (u8, u8, u8)| {
        let d = |a: u8, b: u8| (i32::from(a) - i32::from(b)).pow(2);
        d(x, r) + d(y, g) + d(z, b)
    };
    let cube_rgb = (CUBE[ri as usize], CUBE[gi as usize], CUBE[bi as usize]);
    let avg = (u16::from(r) + u16::from(g) + u16::from(b)) / 3;
    let grey_i = (avg.saturating_sub(3) / 10).min(23) as u8;
    let grey_v = 8 + 10 * grey_i;
    if dist((grey_v, grey_v, grey_v)) < dist(cube_rgb) {
        232 + grey_i
    } else {
        cube
    }
}

/// The RGB of palette index `n`, for the style sheet.
fn palette_rgb(n: u8) -> (u8, u8, u8) {
    // The 16 basic colours as a dark terminal shows them.
    const BASIC: [(u8, u8, u8); 16] = [
        (72, 79, 88),
        (255, 123, 114),
        (63, 185, 80),
        (210, 153, 34),
        (88, 166, 255),
        (188, 140, 255),
        (57, 197, 207),
        (177, 186, 196),
        (110, 118, 129),
        (255, 161, 152),
        (86, 211, 100),
        (227, 179, 65),
        (121, 192, 255),
        (210, 168, 255),
        (86, 212, 221),
        (240, 246, 252),
    ];
    match n {
        0..=15 => BASIC[n as usize],
        16..=231 => {
            let i = n - 16;
            (
                CUBE[(i / 36) as usize],
                CUBE[(i / 6 % 6) as usize],
                CUBE[(i % 6) as usize],
            )
        }
        _ => {
            let v = 8 + 10 * (n - 232);
            (v, v, v)
        }
    }
}

/// The log's colour classes: `.fN` and `.bN` for the 256 palette colours.
pub fn palette_css() -> String {
    let mut css = String::with_capacity(512 * 28);
    for n in 0..=255u8 {
        let (r, g, b) = palette_rgb(n);
        let _ = write!(css, ".f{n}{{color:#{r:02x}{g:02x}{b:02x}}}");
    }
    for n in 0..=255u8 {
        let (r, g, b) = palette_rgb(n);
        let _ = write!(css, ".b{n}{{background:#{r:02x}{g:02x}{b:02x}}}");
    }
    css.push_str(
        ".bo{font-weight:700}.di{opacity:.7}.it{font-style:italic}.un{text-decoration:underline}\n",
    );
    css
}

/// A run of text in one style.
pub type Segment = (Style, String);

/// Reads terminal output line by line, keeping the style across lines.
#[derive(Debug, Clone, Default)]
pub struct Ansi {
    style: Style,
}

impl Ansi {
    /// One line (without its `\n`) as styled segments: SGR sequences set the
    /// style, other escape sequences and control characters are dropped,
    /// and a line rewritten with carriage returns (progress bars) shows its
    /// last version.
    pub fn line(&mut self, raw: &str) -> Vec<Segment> {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let mut segments: Vec<Segment> = Vec::new();
        let mut chars = raw.chars().peekable();
        let push = |segments: &mut Vec<Segment>, style: Style, c: char| match segments.last_mut() {
            Some((s, text)) if *s == style => text.push(c),
            _ => segments.push((style, c.to_string())),
        };
        while let Some(c) = chars.next() {
            match c {
                '\u{1b}' => match chars.next() {
                    // CSI: parameters and intermediates, then one final byte;
                    // `m` is SGR.
                    Some('[') => {
                        let mut params = String::new();
                        for c in chars.by_ref() {
                            if ('\u{40}'..='\u{7e}').contains(&c) {
                                if c == 'm' {
                                    self.style.apply(&params);
                                }
                                break;
                            }
                            if params.len() < 64 {
                                params.push(c);
                            }
                        }
                    }
                    // OSC (titles, hyperlinks): up to BEL or ESC \.
                    Some(']') => {
                        while let Some(c) = chars.next() {
                            if c == '\u{7}' {
                                break;
                            }
                            if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                                chars.next();
                                break;
                            }
                        }
                    }
                    Some(_) | None => {}
                },
                '\r' => segments.clear(),
                '\t' => push(&mut segments, self.style, c),
                c if c.is_control() => {}
                c => push(&mut segments, self.style, c),
            }
        }
        segments
    }
}

/// The text of segments, without styles.
pub fn plain(segments: &[Segment]) -> String {
    segments.iter().map(|(_, t)| t.as_str()).collect()
}

/// One styled line as markup.
pub fn segments_markup(segments: &[Segment]) -> Markup {
    html! {
        @for (style, text) in segments {
            @if *style == Style::default() {
                (text)
            } @else {
                span class=(style.classes()) { (text) }
            }
        }
    }
}

/// What the log says, in order, as the page lays it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A new step's section starts (`None`: before the first step).
    Section(Option<usize>),
    /// A `::group::` line (its number, and its time when asked): a fold
    /// starts, titled by the rest of the line.
    Group(u64, Option<u64>, Vec<Segment>),
    /// An `::endgroup::` line: the fold ends.
    EndGroup(u64),
    /// A line of output: its number, its time (milliseconds since the
    /// log's start) when asked, its text.
    Line(u64, Option<u64>, Vec<Segment>),
}

/// Turns log lines into [`Op`]s. A new section starts at the runner's
/// `==> step NAME: ...` line for the next step in order, so output that
/// imitates one for another step starts nothing.
#[derive(Debug)]
pub struct LogParser {
    ansi: Ansi,
    steps: Vec<String>,
    /// The step whose section is open (`None`: before the first).
    section: Option<usize>,
    in_group: bool,
    /// The number of the next line.
    pub next_line: u64,
    /// The build's secrets, to mask what a line shows (see
    /// `runner::log::visible`).
    masker: Option<std::sync::Arc<crate::runner::log::mask::Masker>>,
    /// Each line's time, when asked for.
    times: Option<LineTimes>,
    /// The byte offset of the next line in the log, for its time (counted
    /// in the text as shown: off by two bytes per invalid UTF-8 byte).
    offset: u64,
}

impl LogParser {
    /// A parser for a log whose first line is number `first_line`, inside
    /// `section`; it emits `Section(section)` first.
    pub fn new(steps: Vec<String>, section: Option<usize>, first_line: u64) -> Self {
        LogParser {
            ansi: Ansi::default(),
            steps,
            section,
            in_group: false,
            next_line: first_line,
            masker: None,
            times: None,
            offset: 0,
        }
    }

    /// New bytes of a live log were read: their times are read when asked.
    pub fn refresh_times(&mut self) {
        if let Some(times) = &mut self.times {
            times.refresh();
        }
    }

    /// Gives each line its time from `times`; the next line starts at byte
    /// `offset` of the log.
    pub fn with_times(&mut self, times: LineTimes, offset: u64) {
        self.times = Some(times);
        self.offset = offset;
    }

    /// Masks every secret a line shows once its escape sequences are
    /// dropped (the file is masked byte for byte; a secret split by an
    /// escape sequence is whole only on the page).
    pub fn mask_with(&mut self, secrets: &[crate::secret::Secret]) {
        let masker = crate::runner::log::mask::Masker::new(secrets);
        self.masker = masker.is_active().then(|| std::sync::Arc::new(masker));
    }

    /// The state a page hands to its live stream to carry on from.
    pub fn state(&self) -> (Option<usize>, bool) {
        (self.section, self.in_group)
    }

    /// Carries on inside a group (a live stream after the page's part).
    pub fn set_in_group(&mut self, in_group: bool) {
        self.in_group = in_group;
    }

    /// The header line that opens step `idx`'s section.
    fn header(&self, idx: usize, text: &str) -> bool {
        self.steps.get(idx).is_some_and(|name| {
            text.strip_prefix("==> step ")
                .and_then(|rest| rest.strip_prefix(name.as_str()))
                .is_some_and(|rest| rest.starts_with(':'))
        })
    }

    /// One line (without `\n`).
    pub fn line(&mut self, raw: &str, out: &mut Vec<Op>) {
        let no = self.next_line;
        self.next_line += 1;
        let at = self.times.as_mut().map(|t| t.at(self.offset));
        self.offset += raw.len() as u64 + 1;
        let mut segments = self.ansi.line(raw);
        if let Some(masker) = &self.masker {
            let shown = plain(&segments);
            if masker.finds(shown.as_bytes()) {
                let mut masked = Vec::with_capacity(shown.len());
                masker.mask_complete(shown.as_bytes(), &mut masked);
                let style = segments.first().map(|(s, _)| *s).unwrap_or_default();
                segments = vec![(style, String::from_utf8_lossy(&masked).into_owned())];
            }
        }
        let text = plain(&segments);
        let next = self.section.map_or(0, |s| s + 1);
        if text.starts_with("==> step ") && self.header(next, &text) {
            self.section = Some(next);
            self.in_group = false;
            out.push(Op::Section(Some(next)));
            out.push(Op::Line(no, at, segments));
            return;
        }
        let trimmed = text.trim_start();
        if let Some(title) = trimmed.strip_prefix("::group::") {
            self.in_group = true;
            let title = if title.trim().is_empty() {
                "group".to_owned()
            } else {
                title.to_owned()
            };
            out.push(Op::Group(no, at, vec![(Style::default(), title)]));
        } else if trimmed.starts_with("::endgroup::") {
            if self.in_group {
                self.in_group = false;
                out.push(Op::EndGroup(no));
            }
        } else {
            out.push(Op::Line(no, at, segments));
        }
    }

    /// Every complete line of `text`; returns the unfinished rest.
    pub fn feed<'t>(&mut self, text: &'t str, out: &mut Vec<Op>) -> &'t str {
        let mut rest = text;
        while let Some(nl) = rest.find('\n') {
            self.line(&rest[..nl], out);
            rest = &rest[nl + 1..];
        }
        rest
    }
}

/// The section a log part starting mid-log opens in: the step before the
/// first step header in `text`, else the last step that started.
pub fn section_at_cut(text: &str, steps: &[String], started: usize) -> Option<usize> {
    for line in text.lines().take(200_000) {
        let Some(rest) = line.strip_prefix("==> step ") else {
            continue;
        };
        if let Some(i) = steps.iter().position(|name| {
            rest.strip_prefix(name.as_str())
                .is_some_and(|r| r.starts_with(':'))
        }) {
            return i.checked_sub(1);
        }
    }
    started.checked_sub(1)
}

/// A line's time, when asked for: since the log's start.
fn time_markup(at: Option<u64>) -> Markup {
    html! {
        @if let Some(ms) = at {
            span.ts data-ms=(ms) { (format_elapsed(ms)) }
        }
    }
}

/// A numbered line: the number links to itself; then its time, when asked.
pub fn line_markup(no: u64, at: Option<u64>, segments: &[Segment]) -> Markup {
    html! {
        div id={ "L" (no) } {
            a href={ "#L" (no) } { (no) }
            (time_markup(at))
            (segments_markup(segments))
        }
    }
}

/// A group fold's opening, without its end (lines are appended inside).
pub fn group_open(no: u64, at: Option<u64>, title: &[Segment]) -> Markup {
    html! {
        summary id={ "L" (no) } {
            a href={ "#L" (no) } { (no) }
            (time_markup(at))
            (segments_markup(title))
        }
    }
}

/// A tree of a section's lines: lines and folds.
#[derive(Debug)]
enum Node {
    Line(u64, Option<u64>, Vec<Segment>),
    Group(
        u64,
        Option<u64>,
        Vec<Segment>,
        Vec<(u64, Option<u64>, Vec<Segment>)>,
    ),
}

/// A step's section of the log.
#[derive(Debug)]
pub struct Section {
    pub step: Option<usize>,
    nodes: Vec<Node>,
}

/// Lays ops out as sections.
pub fn sections(ops: Vec<Op>) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut in_group = false;
    for op in ops {
        match op {
            Op::Section(step) => {
                out.push(Section {
                    step,
                    nodes: Vec::new(),
                });
                in_group = false;
            }
            Op::Group(no, at, title) => {
                if out.is_empty() {
                    out.push(Section {
                        step: None,
                        nodes: Vec::new(),
                    });
                }
                if let Some(s) = out.last_mut() {
                    s.nodes.push(Node::Group(no, at, title, Vec::new()));
                }
                in_group = true;
            }
            Op::EndGroup(_) => in_group = false,
            Op::Line(no, at, segments) => {
                if out.is_empty() {
                    out.push(Section {
                        step: None,
                        nodes: Vec::new(),
                    });
                }
                if let Some(s) = out.last_mut() {
                    match s.nodes.last_mut() {
                        Some(Node::Group(_, _, _, lines)) if in_group => {
                            lines.push((no, at, segments));
                        }
                        _ => s.nodes.push(Node::Line(no, at, segments)),
                    }
                }
            }
        }
    }
    out
}

impl Section {
    /// The section's lines as markup.
    pub fn body(&self) -> Markup {
        html! {
            @for node in &self.nodes {
                @match node {
                    Node::Line(no, at, segments) => (line_markup(*no, *at, segments)),
                    Node::Group(no, at, title, lines) => {
                        details.grp {
                            (group_open(*no, *at, title))
                            @for (no, at, segments) in lines { (line_markup(*no, *at, segments)) }
                        }
                    }
                }
            }
        }
    }

    /// The section has no lines.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(raw: &str) -> String {
        let mut ansi = Ansi::default();
        let segments = ansi.line(raw);
        segments_markup(&segments).into_string()
    }

    #[test]
    fn basic_and_bright_colours_bold_and_underline_are_classes() {
        assert_eq!(
            render("\u{1b}[31merr\u{1b}[0m ok"),
            "<span class=\"f1\">err</span> ok"
        );
        assert_eq!(
            render("\u{1b}[1;4;92mX\u{1b}[22mY"),
            "<span class=\"f10 bo un\">X</span><span class=\"f10 un\">Y</span>"
        );
        assert_eq!(render("\u{1b}[44;97mZ"), "<span class=\"f15 b4\">Z</span>");
    }

    #[test]
    fn colours_of_the_256_palette_and_24_bit_colours_are_classes_of_the_palette() {
        assert_eq!(
            render("\u{1b}[38;5;208mo\u{1b}[39m"),
            "<span class=\"f208\">o</span>"
        );
        assert_eq!(render("\u{1b}[48;5;17mo"), "<span class=\"b17\">o</span>");
        // Pure red in 24 bits is the cube's red; a mid grey is on the ramp.
        assert_eq!(
            render("\u{1b}[38;2;255;0;0mr"),
            "<span class=\"f196\">r</span>"
        );
        assert_eq!(
            render("\u{1b}[38;2;128;128;128mg"),
            "<span class=\"f244\">g</span>"
        );
        // A colour after a 24-bit one still applies; a cut one is ignored.
        assert_eq!(
            render("\u{1b}[38;2;0;0;0;1mb"),
            "<span class=\"f16 bo\">b</span>"
        );
        assert_eq!(render("\u{1b}[38;5mq"), "q");
        assert_eq!(render("\u{1b}[38;2;1mq"), "q");
    }

    #[test]
    fn markup_inside_coloured_text_stays_text() {
        let html = render("\u{1b}[31m<script>alert(1)</script>&\"'\u{1b}[0m<b>");
        assert_eq!(
            html,
            "<span class=\"f1\">&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;'</span>&lt;b&gt;"
        );
        // A sequence's parameters never reach the markup.
        let html = render("\u{1b}[31;\"><script>m x");
        assert!(!html.contains("<script"), "{html}");
    }

    #[test]
    fn the_style_carries_over_lines_until_reset() {
        let mut ansi = Ansi::default();
        ansi.line("\u{1b}[32mgreen");
        assert_eq!(
            segments_markup(&ansi.line("still")).into_string(),
            "<span class=\"f2\">still</span>"
        );
        ansi.line("\u{1b}[m");
        assert_eq!(segments_markup(&ansi.line("plain")).into_string(), "plain");
    }

    #[test]
    fn other_sequences_and_control_characters_are_dropped_and_progress_shows_its_end() {
        let mut ansi = Ansi::default();
        assert_eq!(
            plain(&ansi.line("\u{1b}]0;title\u{7}a\u{1b}[2Kb\u{7}\u{0}\tc")),
            "ab\tc"
        );
        assert_eq!(plain(&ansi.line("10%\r50%\r100%\r")), "100%");
        assert_eq!(plain(&ansi.line("a\u{1b}[12")), "a");
        assert_eq!(plain(&ansi.line("a\u{1b}")), "a");
    }

    fn steps() -> Vec<String> {
        vec!["build".to_owned(), "test".to_owned()]
    }

    #[test]
    fn steps_open_sections_in_order_and_groups_fold() {
        let log = "==> hookci build 1\n==> step build: make\n::group::Deps\na\n::endgroup::\nb\n\
                   ==> step build: fake\n==> step test: make test\nc\n";
        let mut p = LogParser::new(steps(), None, 1);
        let mut ops = vec![Op::Section(None)];
        assert_eq!(p.feed(log, &mut ops), "");
        let kinds: Vec<String> = ops
            .iter()
            .map(|op| match op {
                Op::Section(s) => format!("S{s:?}"),
                Op::Group(n, _, _) => format!("G{n}"),
                Op::EndGroup(n) => format!("E{n}"),
                Op::Line(n, _, _) => format!("L{n}"),
            })
            .collect();
        // The second `==> step build:` is output, not a section.
        assert_eq!(
            kinds,
            [
                "SNone", "L1", "SSome(0)", "L2", "G3", "L4", "E5", "L6", "L7", "SSome(1)", "L8",
                "L9"
            ]
        );
        let secs = sections(ops);
        assert_eq!(secs.len(), 3);
        let body = secs[1].body().into_string();
        assert!(
            body.contains(
                "<details class=\"grp\"><summary id=\"L3\"><a href=\"#L3\">3</a>Deps</summary>"
            ),
            "{body}"
        );
        assert!(
            body.contains("<div id=\"L4\"><a href=\"#L4\">4</a>a</div>"),
            "{body}"
        );
        assert!(
            !body.contains("::group::") && !body.contains("endgroup"),
            "{body}"
        );
    }

    #[test]
    fn a_tail_opens_in_the_step_that_was_running_at_the_cut() {
        assert_eq!(
            section_at_cut("x\n==> step test: t\n", &steps(), 2),
            Some(0)
        );
        assert_eq!(section_at_cut("x\n==> step build: t\n", &steps(), 2), None);
        assert_eq!(section_at_cut("x\ny\n", &steps(), 2), Some(1));
    }

    #[test]
    fn the_palette_style_sheet_has_every_colour() {
        let css = palette_css();
        assert!(css.contains(".f1{color:#ff7b72}"));
        assert!(css.contains(".f196{color:#ff0000}"));
        assert!(css.contains(".b255{background:#eeeeee}"));
    }
}
