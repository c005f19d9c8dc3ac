//! One function per fuzz target (`fuzz/fuzz_targets/*.rs`): each feeds arbitrary bytes to a
//! family of parsers and asserts what must hold of any input, beyond not panicking. The
//! saved corpora and every input that once failed are replayed by `tests/corpus.rs` on every
//! `cargo test`.

use std::collections::HashSet;

use crate::routes::{
    RESERVED_PREFIX, ROUTE_BYTES_MAX, candidates, request_target_bytes, validate_name,
    validate_route,
};

/// Route lookup, route and name rules, request-target size. The input's first line is a
/// set of routes (space-separated), the rest a request target.
pub fn route(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (routes, target) = text.split_once('\n').unwrap_or(("", &text));
    let routes: HashSet<&str> = routes
        .split(' ')
        .filter(|r| validate_route(r).is_ok())
        .collect();
    for route in &routes {
        assert!(route.starts_with('/') && route.len() <= ROUTE_BYTES_MAX);
        assert!(*route != RESERVED_PREFIX && !route.starts_with("/_eddy/"));
    }
    if validate_name(target).is_ok() {
        assert!(!target.is_empty() && target.len() <= 63 && target.is_ascii());
    }
    let Ok(uri) = target.parse::<http::Uri>() else {
        return;
    };
    assert!(request_target_bytes(&uri) <= target.len());
    let path = uri.path();
    if !path.starts_with('/') {
        // Not an origin-form target (`ea` parses as an authority): hyper refuses these
        // before ingress routes anything, and no route is a prefix of them.
        assert!(candidates(path).all(|p| !routes.contains(p)));
        return;
    }
    let tried: Vec<&str> = candidates(path).collect();
    assert!(
        tried.len() <= ROUTE_BYTES_MAX + 1,
        "{} candidates",
        tried.len()
    );
    for (i, prefix) in tried.iter().enumerate() {
        assert!(prefix.len() <= ROUTE_BYTES_MAX);
        assert!(
            i == 0 || prefix.len() < tried[i - 1].len(),
            "not longest first"
        );
        assert!(
            is_whole_segment_prefix(prefix, path),
            "{prefix:?} of {path:?}"
        );
    }
    // The lookup's answer is the longest route that is a whole-segment prefix of the path.
    let found = tried.iter().find(|p| routes.contains(*p));
    let longest = routes
        .iter()
        .filter(|r| is_whole_segment_prefix(r, path))
        .max_by_key(|r| r.len());
    assert_eq!(found, longest, "path {path:?}");
}

/// `/api` is a whole-segment prefix of `/api` and `/api/x`, not of `/apix`; `/` of any path.
fn is_whole_segment_prefix(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `eddy.toml`: a manifest that parses says so again after its names and values are
/// re-checked.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = crate::manifest::parse(text) else {
        return;
    };
    for queue in &manifest.queues {
        crate::api::validate_queue_name(&queue.name).unwrap();
        assert_ne!(queue.idempotency_window_ms, Some(0));
    }
    for function in &manifest.functions {
        assert_ne!(function.config.memory_bytes_max, Some(0));
        assert_ne!(function.config.timeout_ms, Some(0));
        for key in function.config.env.keys() {
            crate::manifest::check_env_key(key).unwrap();
        }
        // What the CLI sends, the node reads back as it was meant.
        let body = serde_json::to_string(&function.config).unwrap();
        let read: crate::api::DeployRequest = serde_json::from_str(&body).unwrap();
        assert_eq!(read, function.config);
    }
}

/// Price sheets: a sheet that parses is within its bounds, prices some memory size finitely,
/// and parses again the same from its own TOML.
pub fn price_sheet(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sheet) = crate::sheets::PriceSheet::from_toml(text) else {
        return;
    };
    for bytes in [0, 1 << 20, 128 << 20, u64::MAX] {
        let gb = sheet.memory_gb(bytes);
        assert!(gb.is_finite() && gb >= 0.0, "{gb}");
    }
    let again = toml::to_string(&sheet).unwrap();
    let reparsed = crate::sheets::PriceSheet::from_toml(&again).unwrap();
    assert_eq!(toml::to_string(&reparsed).unwrap(), again);
}

/// Sizes and durations: values above zero; what the CLI shows of a size or a duration reads
/// back as the same value when it is exact.
pub fn units(data: &[u8]) {
    use crate::units::{format_bytes, format_ms, parse_duration_ms, parse_size};
    let text = String::from_utf8_lossy(data);
    if let Ok(bytes) = parse_size(&text) {
        assert!(bytes > 0);
    }
    if let Ok(ms) = parse_duration_ms(&text) {
        assert!(ms > 0);
        assert_eq!(parse_duration_ms(&format_ms(ms)), Ok(ms), "{text:?}");
    }
    if data.len() >= 8 {
        let n = u64::from_le_bytes(data[..8].try_into().unwrap());
        let shown = format_bytes(n);
        if n > 0 && !shown.contains('.') {
            assert_eq!(parse_size(&shown), Ok(n), "{shown}");
        }
        if n > 0 {
            assert_eq!(parse_duration_ms(&format_ms(n)), Ok(n));
        }
    }
}

/// `eddy.local`: the close query, a message's kind, and channel names in paths. Lines:
/// query, kind header, content type, channel.
pub fn platform(data: &[u8]) {
    use crate::platform::{CLOSE_REASON_BYTES_MAX, CloseQuery, message_is_text};
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let query = lines.next().unwrap_or_default();
    if let Ok(close) = serde_urlencoded::from_str::<CloseQuery>(query)
        && let Ok((code, reason)) = close.frame()
    {
        assert!(code == 1000 || (3000..=4999).contains(&code));
        assert!(reason.len() <= CLOSE_REASON_BYTES_MAX);
    }
    let kind = lines.next().filter(|k| !k.is_empty());
    let content_type = lines.next();
    if let Ok(true) = message_is_text(kind, content_type) {
        assert!(kind == Some("text") || kind.is_none());
    }
    for channel in lines {
        if crate::api::validate_channel(channel).is_ok() {
            // It reads the same in a URL path: nothing to percent-encode.
            assert!(
                channel
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
            );
        }
    }
}

/// Control-API JSON bodies and queries: the first byte picks the type. A body that parses
/// holds only names the rules allow where the node relies on it.
pub fn api_bodies(data: &[u8]) {
    use crate::api::*;
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 10 {
        0 => drop(serde_json::from_slice::<DeployRequest>(rest)),
        1 => drop(serde_json::from_slice::<RollbackRequest>(rest)),
        2 => drop(serde_json::from_slice::<CreateQueue>(rest).map(|q| {
            if validate_queue_name(&q.name).is_ok() {
                assert!(q.name.len() <= QUEUE_NAME_BYTES_MAX);
            }
        })),
        3 => drop(serde_json::from_slice::<BatchPublish>(rest)),
        4 => drop(serde_json::from_slice::<ConsumerRequest>(rest)),
        5 => drop(serde_urlencoded::from_str::<LogsQuery>(&text)),
        6 => drop(serde_urlencoded::from_str::<StatsQuery>(&text)),
        7 => drop(serde_urlencoded::from_str::<PeekQuery>(&text)),
        8 => drop(serde_urlencoded::from_str::<CostQuery>(&text)),
        _ => {
            if validate_queue_name(&text).is_ok() {
                validate_name(&format!("{text}-dlq")).unwrap();
            }
        }
    }
}
