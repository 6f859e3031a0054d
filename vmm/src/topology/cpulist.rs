//! The kernel's CPU-list syntax (`0-3,8-11`), used by sysfs files,
//! `/proc/*/status`, `--pin` and `--numa`: parsing and compact printing.

/// Parse a list such as `0-3,8,10-11` into ids, in the order written
/// (ranges ascending). Empty input is an empty list. The error says what
/// part is wrong.
pub fn parse(text: &str) -> Result<Vec<u32>, String> {
    let t = text.trim();
    let mut ids = Vec::new();
    if t.is_empty() {
        return Ok(ids);
    }
    for part in t.split(',') {
        let number = |s: &str| -> Result<u32, String> {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("'{part}' is not a CPU number or range like 0-3"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    return Err(format!("range '{part}' runs backwards"));
                }
                if b - a >= MAX_RANGE {
                    return Err(format!("range '{part}' is implausibly long"));
                }
                ids.extend(a..=b);
            }
            None => ids.push(number(part)?),
        }
    }
    Ok(ids)
}

/// Longest range [`parse`] accepts, far beyond any host's CPU count.
const MAX_RANGE: u32 = 1 << 16;

/// `"0-3,7"` for `[0, 1, 2, 3, 7]`; `"none"` for an empty list. The ids
/// are taken in the order given (sort them first for the canonical form).
pub fn format(ids: &[u32]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            ids[i].to_string()
        } else {
            format!("{}-{}", ids[i], ids[j])
        });
        i = j + 1;
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_in_order() {
        assert_eq!(parse("0-3,8-9"), Ok(vec![0, 1, 2, 3, 8, 9]));
        assert_eq!(parse("5,2"), Ok(vec![5, 2]));
        assert_eq!(parse(" 7\n"), Ok(vec![7]));
        assert_eq!(parse(""), Ok(vec![]));
        assert!(parse("3-1").unwrap_err().contains("backwards"));
        assert!(parse("a").unwrap_err().contains("'a'"));
        assert!(parse("1,,2").is_err());
        assert!(parse("0-4294967295").unwrap_err().contains("long"));
    }

    #[test]
    fn lists_print_compactly() {
        assert_eq!(format(&[0, 1, 2, 3, 7]), "0-3,7");
        assert_eq!(format(&[5]), "5");
        assert_eq!(format(&[]), "none");
        assert_eq!(format(&[0, 2, 4, 5]), "0,2,4-5");
    }
}
