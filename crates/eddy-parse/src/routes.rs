//! Routes and request targets: which route prefixes serve a path, what a route and a
//! function name may be, and how long a request target is.

/// Paths under this prefix belong to the node (health checks) and cannot be routes.
pub const RESERVED_PREFIX: &str = "/_eddy";
/// Longest accepted route.
pub const ROUTE_BYTES_MAX: usize = 256;

/// The bytes of a request target that count against `request_target_bytes_max`: the path
/// and the query, as the client sent them.
pub fn request_target_bytes(uri: &http::Uri) -> usize {
    uri.path_and_query().map_or(0, |p| p.as_str().len())
}

/// The prefixes that could serve `path`, longest first: `/a/b`, `/a`, `/`.
///
/// No route is longer than `ROUTE_BYTES_MAX`, so only prefixes within that many bytes are
/// tried: at most `ROUTE_BYTES_MAX` lookups of at most `ROUTE_BYTES_MAX` bytes each, however
/// long the path (a path of 40,000 `/` once cost 40,000 hashes of up to 40,000 bytes).
pub fn candidates(path: &str) -> impl Iterator<Item = &str> {
    let first = if path.len() <= ROUTE_BYTES_MAX {
        Some(path)
    } else {
        // Longer than any route: start at the longest whole-segment prefix that could be one.
        let head = &path.as_bytes()[..=ROUTE_BYTES_MAX];
        match head.iter().rposition(|&b| b == b'/') {
            Some(0) => Some("/"),
            Some(end) => Some(&path[..end]),
            None => None,
        }
    };
    debug_assert!(first.is_none_or(|p| p.len() <= ROUTE_BYTES_MAX));
    std::iter::successors(first, |prefix| match prefix.rfind('/') {
        Some(0) if prefix.len() > 1 => Some("/"),
        Some(0) | None => None,
        Some(i) => Some(&prefix[..i]),
    })
}

/// Check a route prefix, saying what is wrong with it.
pub fn validate_route(route: &str) -> Result<(), String> {
    let problem = if !route.starts_with('/') {
        Some("must start with `/`")
    } else if route.len() > ROUTE_BYTES_MAX {
        Some("is longer than 256 bytes")
    } else if route.len() > 1 && route.ends_with('/') {
        Some("must not end with `/`")
    } else if route.contains("//") {
        Some("must not contain an empty segment (`//`)")
    } else if route.split('/').any(|seg| seg == "." || seg == "..") {
        Some("must not contain `.` or `..` segments")
    } else if !route
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
    {
        Some("may contain only letters, digits and `/-._~`")
    } else if route == RESERVED_PREFIX || route.starts_with("/_eddy/") {
        Some("is reserved for the node (`/_eddy`)")
    } else {
        None
    };
    match problem {
        Some(p) => Err(format!("route `{route}` {p}")),
        None => Ok(()),
    }
}

/// Check a function name: 1–63 of `a-z0-9-`, starting with a letter.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "function name `{name}` is invalid: use 1-63 characters of a-z, 0-9 and `-`, starting with a letter"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(routes: &[&str], path: &str) -> Option<String> {
        candidates(path)
            .find(|c| routes.contains(c))
            .map(str::to_string)
    }

    #[test]
    fn candidates_walk_whole_segments() {
        assert_eq!(
            candidates("/api/v2/users").collect::<Vec<_>>(),
            ["/api/v2/users", "/api/v2", "/api", "/"]
        );
        assert_eq!(candidates("/").collect::<Vec<_>>(), ["/"]);
    }

    #[test]
    fn long_paths_are_looked_up_within_the_longest_route() {
        // 40,000 slashes once meant 40,000 lookups of up to 40,000 bytes each.
        let slashes = "/".repeat(40_000);
        let tried: Vec<&str> = candidates(&slashes).collect();
        assert!(tried.len() <= ROUTE_BYTES_MAX, "{} lookups", tried.len());
        assert!(tried.iter().all(|c| c.len() <= ROUTE_BYTES_MAX));
        assert_eq!(tried.last(), Some(&"/"));
        // A route at the limit still serves a longer path below it.
        let route = format!("/{}", "a".repeat(ROUTE_BYTES_MAX - 1));
        let path = format!("{route}/{}", "b/".repeat(10_000));
        assert_eq!(matches(&[&route], &path).as_deref(), Some(route.as_str()));
        assert_eq!(matches(&["/"], &path).as_deref(), Some("/"));
        // One byte too many for a route: its own prefix is not tried.
        let over = format!("/{}", "a".repeat(ROUTE_BYTES_MAX));
        assert_eq!(matches(&["/"], &format!("{over}/x")).as_deref(), Some("/"));
        assert_eq!(candidates(&over).next(), Some("/"));
    }

    #[test]
    fn longest_whole_segment_prefix_wins() {
        let routes = ["/", "/api", "/api/v2"];
        assert_eq!(
            matches(&routes, "/api/v2/users").as_deref(),
            Some("/api/v2")
        );
        assert_eq!(matches(&routes, "/api/v1").as_deref(), Some("/api"));
        assert_eq!(matches(&routes, "/apix").as_deref(), Some("/"));
        assert_eq!(matches(&["/api"], "/apix"), None);
        assert_eq!(matches(&["/api"], "/api").as_deref(), Some("/api"));
        assert_eq!(matches(&["/api"], "/api/").as_deref(), Some("/api"));
    }

    #[test]
    fn routes_are_checked() {
        assert!(validate_route("/hello").is_ok());
        assert!(validate_route("/").is_ok());
        for bad in [
            "hello", "/hello/", "/a//b", "/a/../b", "/_eddy", "/_eddy/x", "/a b", "/a?b",
        ] {
            assert!(validate_route(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("hello-2").is_ok());
        for bad in ["", "2hello", "Hello", "a_b", &"a".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad} accepted");
        }
    }
}
