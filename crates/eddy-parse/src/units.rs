//! Sizes and durations: parsing what users type (`64MiB`, `2s`) and showing what the node
//! reports (`128 MiB`, `30s`). The node speaks bytes and milliseconds only.

use std::time::Duration;

use bytesize::ByteSize;

const SIZE_EXAMPLES: &str = "e.g. 64MiB, 512KiB, 1GiB or a byte count";
const DURATION_EXAMPLES: &str = "e.g. 2s, 500ms or 1m";

/// Parses a size such as `64MiB`, `512KiB`, `1GiB` (binary units), `64MB` (decimal units) or a
/// plain byte count.
pub fn parse_size(value: &str) -> Result<u64, String> {
    let bytes = value
        .trim()
        .parse::<ByteSize>()
        .map_err(|_| format!("`{value}` is not a size; expected {SIZE_EXAMPLES}"))?
        .as_u64();
    if bytes == 0 {
        return Err(format!(
            "`{value}` is zero; expected a size above zero, {SIZE_EXAMPLES}"
        ));
    }
    Ok(bytes)
}

/// Parses a duration such as `2s`, `500ms` or `1m 30s` into whole milliseconds.
pub fn parse_duration_ms(value: &str) -> Result<u64, String> {
    let duration = humantime::parse_duration(value.trim()).map_err(|err| {
        format!("`{value}` is not a duration ({err}); expected {DURATION_EXAMPLES}")
    })?;
    if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(format!("`{value}` is not a whole number of milliseconds"));
    }
    let ms = u64::try_from(duration.as_millis())
        .map_err(|_| format!("`{value}` is too long; expected {DURATION_EXAMPLES}"))?;
    if ms == 0 {
        return Err(format!(
            "`{value}` is zero; expected a duration above zero, {DURATION_EXAMPLES}"
        ));
    }
    Ok(ms)
}

/// Shows a byte count in binary units: exact multiples without decimals (`128 MiB`), others
/// to one decimal (`81.3 KiB`).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    match UNITS.iter().find(|(size, _)| bytes >= *size) {
        Some((size, unit)) if bytes.is_multiple_of(*size) => format!("{} {unit}", bytes / size),
        Some(_) => ByteSize(bytes).display().iec().to_string(),
        None => format!("{bytes} B"),
    }
}

/// Shows a millisecond count the way `--timeout` accepts it: `30s`, `500ms`, `2s 500ms`.
pub fn format_ms(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// A wire timestamp: RFC 3339 with milliseconds, UTC (`2027-01-01T00:00:00.000Z`), from unix
/// milliseconds (before 1970 reads as 1970). The node's CloudEvents and the CLI's output use
/// this one format.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_binary_decimal_and_plain_bytes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64MB"), Ok(64_000_000));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
    }

    #[test]
    fn sizes_refuse_nonsense_with_examples() {
        for bad in ["", "lots", "64 parsecs", "-1", "MiB"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("expected e.g. 64MiB"), "{bad:?}: {err}");
        }
        assert!(parse_size("0").unwrap_err().contains("zero"));
    }

    #[test]
    fn durations_become_milliseconds() {
        assert_eq!(parse_duration_ms("2s"), Ok(2000));
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("1m 30s"), Ok(90_000));
    }

    #[test]
    fn durations_refuse_nonsense() {
        assert!(
            parse_duration_ms("2")
                .unwrap_err()
                .contains("expected e.g. 2s")
        );
        assert!(
            parse_duration_ms("soon")
                .unwrap_err()
                .contains("expected e.g. 2s")
        );
        assert!(parse_duration_ms("0s").unwrap_err().contains("zero"));
        assert!(
            parse_duration_ms("1500us")
                .unwrap_err()
                .contains("whole number of milliseconds")
        );
    }

    #[test]
    fn sizes_show_in_binary_units() {
        assert_eq!(format_bytes(134_217_728), "128 MiB");
        assert_eq!(format_bytes(1 << 30), "1 GiB");
        assert_eq!(format_bytes(83_211), "81.3 KiB");
        assert_eq!(format_bytes(512), "512 B");
    }

    #[test]
    fn durations_show_as_they_are_typed() {
        assert_eq!(format_ms(30_000), "30s");
        assert_eq!(format_ms(500), "500ms");
        assert_eq!(format_ms(2_500), "2s 500ms");
        assert_eq!(parse_duration_ms(&format_ms(2_500)), Ok(2_500));
    }
}
