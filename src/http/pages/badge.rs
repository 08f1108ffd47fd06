//! The status badge: a shields.io "flat" SVG, "build | passing".

use crate::store::BuildStatus;
use std::fmt::Write;

/// What a badge says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// The latest finished build succeeded.
    Passing,
    /// The latest finished build failed.
    Failing,
    /// The latest finished build could not run.
    Error,
    /// The latest finished build was cancelled.
    Cancelled,
    /// Nothing finished yet; a build is running.
    Running,
    /// Nothing finished yet; a build is queued.
    Queued,
    /// No build to show.
    Unknown,
}

impl Shown {
    /// What a badge for a build in `status` (or none) says.
    pub fn of(status: Option<BuildStatus>) -> Shown {
        match status {
            Some(BuildStatus::Success) => Shown::Passing,
            Some(BuildStatus::Failure) => Shown::Failing,
            Some(BuildStatus::Error) => Shown::Error,
            Some(BuildStatus::Cancelled) => Shown::Cancelled,
            Some(BuildStatus::Running) => Shown::Running,
            Some(BuildStatus::Waiting | BuildStatus::Queued) => Shown::Queued,
            Some(BuildStatus::Skipped) | None => Shown::Unknown,
        }
    }

    fn word(self) -> &'static str {
        match self {
            Shown::Passing => "passing",
            Shown::Failing => "failing",
            Shown::Error => "error",
            Shown::Cancelled => "cancelled",
            Shown::Running => "running",
            Shown::Queued => "queued",
            Shown::Unknown => "unknown",
        }
    }

    /// shields.io's colours.
    fn colour(self) -> &'static str {
        match self {
            Shown::Passing => "#4c1",
            Shown::Failing => "#e05d44",
            Shown::Error => "#b60205",
            Shown::Cancelled | Shown::Unknown => "#9f9f9f",
            Shown::Running => "#dfb317",
            Shown::Queued => "#007ec6",
        }
    }
}

const LABEL: &str = "build";

/// The badge of pipeline `name` (on `branch`, when given).
pub fn svg(name: &str, branch: Option<&str>, shown: Shown) -> String {
    let word = shown.word();
    // Widths in tenths of a pixel, as shields.io draws at scale(.1).
    let label_text = text_width(LABEL);
    let word_text = text_width(word);
    let label_w = label_text + 100;
    let word_w = word_text + 100;
    let width = label_w + word_w;
    let title = match branch {
        Some(branch) => format!("{name} on {branch}: {LABEL} {word}"),
        None => format!("{name}: {LABEL} {word}"),
    };
    let title = xml_escape(&title);
    let colour = shown.colour();
    let (w, lw, ww) = (px(width), px(label_w), px(word_w));
    let (lx, wx) = (label_w / 2, label_w + word_w / 2);
    let mut out = String::with_capacity(1200);
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" aria-label="{title}"><title>{title}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{w}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{ww}" height="20" fill="{colour}"/><rect width="{w}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" text-rendering="geometricPrecision" font-size="110"><text aria-hidden="true" x="{lx}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)" textLength="{label_text}">{LABEL}</text><text x="{lx}" y="140" transform="scale(.1)" fill="#fff" textLength="{label_text}">{LABEL}</text><text aria-hidden="true" x="{wx}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)" textLength="{word_text}">{word}</text><text x="{wx}" y="140" transform="scale(.1)" fill="#fff" textLength="{word_text}">{word}</text></g></svg>"##
    );
    out
}

/// Tenths of a pixel as pixels, rounded up.
fn px(tenths: u32) -> u32 {
    tenths.div_ceil(10)
}

/// The width of `text` in Verdana 11px, in tenths of a pixel (the badge
/// words are lower-case letters; `textLength` makes any font fit).
fn text_width(text: &str) -> u32 {
    text.chars()
        .map(|c| match c {
            'i' | 'l' => 30,
            'j' => 38,
            'f' => 39,
            't' => 43,
            'r' => 47,
            'c' | 's' => 57,
            'z' => 58,
            'k' | 'v' | 'x' | 'y' => 65,
            'a' | 'e' => 66,
            'o' => 67,
            'b' | 'd' | 'g' | 'p' | 'q' => 69,
            'w' => 89,
            'm' => 107,
            _ => 70,
        })
        .sum()
}

/// `text` safe inside an XML attribute or element.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_in_a_badge_is_escaped() {
        let svg = svg("app", Some("<b>\"x\"&'\u{0}"), Shown::Passing);
        assert!(svg.contains("app on &lt;b&gt;&quot;x&quot;&amp;&apos;: build passing"));
        assert!(!svg.contains("<b>"));
        assert!(!svg.contains('\u{0}'));
    }
}
