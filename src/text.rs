//! Text that the pages, the build log and the command line share, so that
//! one build reads the same everywhere: durations, and URL components.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::time::Duration;

/// A duration as people write it, to its two largest units: `850ms`,
/// `45s`, `1m 12s`, `2h 5m`, `1day 3h` (humantime's words).
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    // Past an hour the seconds, past a day the minutes, are noise.
    let unit = match secs {
        ..3_600 => 1,
        3_600..86_400 => 60,
        _ => 3_600,
    };
    humantime::format_duration(Duration::from_secs(secs / unit * unit)).to_string()
}

/// What RFC 3986 leaves unescaped in a path segment or a query value: its
/// unreserved characters.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `s` percent-encoded as one URL path segment or query value: nothing in
/// it can end the segment, start a query or reach another route.
pub fn url_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_keep_their_two_largest_units() {
        let ms = Duration::from_millis;
        assert_eq!(duration(ms(0)), "0ms");
        assert_eq!(duration(ms(850)), "850ms");
        assert_eq!(duration(ms(12_300)), "12s");
        assert_eq!(duration(ms(185_000)), "3m 5s");
        assert_eq!(duration(ms(3_909_000)), "1h 5m");
        assert_eq!(duration(ms((27 * 3600 + 125) * 1000)), "1day 3h");
    }

    #[test]
    fn url_components_escape_all_but_the_unreserved() {
        assert_eq!(url_component("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(url_component("app-1.x_~"), "app-1.x_~");
        assert_eq!(url_component("../x?y#z"), "..%2Fx%3Fy%23z");
    }
}
