//! W3C trace context values: <https://www.w3.org/TR/trace-context/#traceparent-header>.
//! Telemetry writes and reads them; events carry them in their `traceparent` extension.

/// Whether `value` is a `traceparent` we can continue (version 00, non-zero ids).
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

/// A fresh sampled `traceparent` for work that arrived without one.
pub fn new_traceparent() -> String {
    let trace: [u8; 16] = rand::random();
    let span: [u8; 8] = rand::random();
    format!("00-{}-{}-01", hex(&trace), hex(&span))
}

/// `parent` with a new span id: the same trace, a new unit of work in it. `None` when
/// `parent` is not valid.
pub fn child_of(parent: &str) -> Option<String> {
    if !valid_traceparent(parent) {
        return None;
    }
    let span: [u8; 8] = rand::random();
    Some(format!(
        "{}-{}-{}",
        &parent[..35],
        hex(&span),
        &parent[53..]
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_and_child_traceparents_are_valid_and_keep_the_trace() {
        let root = new_traceparent();
        assert!(valid_traceparent(&root), "{root}");
        let child = child_of(&root).expect("valid parent");
        assert!(valid_traceparent(&child));
        assert_eq!(child[..35], root[..35]);
        assert_ne!(child[36..52], root[36..52]);
        assert_eq!(child[53..], root[53..]);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
            assert!(child_of(bad).is_none());
        }
    }
}
