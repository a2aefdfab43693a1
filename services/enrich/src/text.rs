//! Text clean-up shared by the news parsers: bytes in a declared encoding → `String`, HTML
//! (tags, entities) → plain text, whitespace collapsed.

/// Decode payload bytes. `encoding` is the feed document's declared encoding (the connector's
/// `encoding` attribute): windows-1252 and its ISO-8859-1 alias are decoded by table; anything
/// else is read as UTF-8, falling back to windows-1252 when the bytes are not valid UTF-8 (the
/// usual mislabelling), so no byte is ever rejected.
pub(crate) fn decode_bytes(bytes: &[u8], encoding: Option<&str>) -> String {
    let single_byte = encoding.is_some_and(|label| {
        matches!(
            label.trim().to_ascii_lowercase().as_str(),
            "windows-1252"
                | "cp1252"
                | "iso-8859-1"
                | "iso8859-1"
                | "latin1"
                | "latin-1"
                | "us-ascii"
        )
    });
    if !single_byte {
        if let Ok(text) = std::str::from_utf8(bytes) {
            return text.to_owned();
        }
    }
    bytes.iter().map(|&b| windows_1252(b)).collect()
}

fn windows_1252(byte: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    match byte {
        0x80..=0x9f => HIGH
            .get(usize::from(byte - 0x80))
            .copied()
            .unwrap_or('\u{fffd}'),
        _ => char::from(byte),
    }
}

/// HTML (or plain text with entities) → plain text: tags removed (with the contents of
/// `script`/`style`), entities decoded, runs of whitespace collapsed to one space, trimmed.
pub(crate) fn html_to_text(input: &str) -> String {
    let stripped = strip_tags(input);
    collapse_whitespace(&decode_entities(&stripped))
}

/// Collapse whitespace (including no-break spaces) to single spaces and trim.
pub(crate) fn collapse_whitespace(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for word in input.split(char::is_whitespace).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

fn strip_tags(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(open) = rest.find('<') {
        let (before, tag_and_after) = rest.split_at(open);
        out.push_str(before);
        let starts_tag = tag_and_after
            .chars()
            .nth(1)
            .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '/' | '!' | '?'));
        if !starts_tag {
            // A lone `<` (e.g. "a < b") is text.
            out.push('<');
            rest = tag_and_after.get(1..).unwrap_or_default();
            continue;
        }
        let Some(close) = tag_and_after.find('>') else {
            // An unterminated tag: drop it, it is markup cut off.
            rest = "";
            break;
        };
        let tag = tag_and_after.get(1..close).unwrap_or_default();
        rest = tag_and_after.get(close + 1..).unwrap_or_default();
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if name == "script" || name == "style" {
            let end = format!("</{name}");
            let lower = rest.to_ascii_lowercase();
            rest = match lower.find(&end) {
                Some(at) => rest
                    .get(at..)
                    .and_then(|r| r.find('>').and_then(|gt| r.get(gt + 1..)))
                    .unwrap_or_default(),
                None => "",
            };
        }
        // Tags separate words ("<p>a</p><p>b</p>" is "a b"); extra spaces collapse later.
        out.push(' ');
    }
    out.push_str(rest);
    out
}

/// Decode HTML character references: numeric ones and the named ones seen in news feeds.
/// Unknown names are kept as written.
pub(crate) fn decode_entities(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(amp) = rest.find('&') {
        let (before, from_amp) = rest.split_at(amp);
        out.push_str(before);
        let after = from_amp.get(1..).unwrap_or_default();
        let reference = after
            .find(';')
            .filter(|&semi| semi <= 10)
            .and_then(|semi| Some((after.get(..semi)?, semi)));
        match reference.and_then(|(name, semi)| Some((entity(name)?, semi))) {
            Some((decoded, semi)) => {
                out.push(decoded);
                rest = after.get(semi + 1..).unwrap_or_default();
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse::<u32>().ok()?,
        };
        // Windows-1252 code points written as numbers (&#146;) mean their 1252 characters.
        return match code {
            0x80..=0x9f => u8::try_from(code).ok().map(windows_1252),
            _ => char::from_u32(code),
        };
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "ndash" => '–',
        "mdash" => '—',
        "lsquo" => '‘',
        "rsquo" => '’',
        "sbquo" => '‚',
        "ldquo" => '“',
        "rdquo" => '”',
        "bdquo" => '„',
        "hellip" => '…',
        "bull" => '•',
        "middot" => '·',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "euro" => '€',
        "pound" => '£',
        "cent" => '¢',
        "yen" => '¥',
        "sect" => '§',
        "para" => '¶',
        "deg" => '°',
        "plusmn" => '±',
        "times" => '×',
        "divide" => '÷',
        "frac12" => '½',
        "frac14" => '¼',
        "frac34" => '¾',
        "laquo" => '«',
        "raquo" => '»',
        "iexcl" => '¡',
        "iquest" => '¿',
        "eacute" => 'é',
        "egrave" => 'è',
        "aacute" => 'á',
        "agrave" => 'à',
        "ccedil" => 'ç',
        "uuml" => 'ü',
        "ouml" => 'ö',
        "auml" => 'ä',
        "szlig" => 'ß',
        "ntilde" => 'ñ',
        "shy" => '\u{ad}',
        "zwj" => '\u{200d}',
        "zwnj" => '\u{200c}',
        _ => return None,
    })
}

/// The first `max_chars` characters of `text`, with an ellipsis when cut.
pub(crate) fn truncate_chars(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", text.get(..cut).unwrap_or(text).trim_end()),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_text() {
        assert_eq!(
            html_to_text(" <b>Filed:</b> 2021-04-29 <b>AccNo:</b> 0001104659-21-057704 "),
            "Filed: 2021-04-29 AccNo: 0001104659-21-057704"
        );
        assert_eq!(
            html_to_text("&nbsp;“These talented individuals are…"),
            "“These talented individuals are…"
        );
        assert_eq!(html_to_text("AT&amp;T &#36;T &#x24;T"), "AT&T $T $T");
        assert_eq!(html_to_text("a < b &unknown; & c"), "a < b &unknown; & c");
        assert_eq!(
            html_to_text("<p>one</p><script>alert('<p>')</script><STYLE>p{}</style>two"),
            "one two"
        );
        assert_eq!(html_to_text("it&#146;s <br/>fine <a href=\"x"), "it’s fine");
    }

    #[test]
    fn windows_1252_and_utf8() {
        assert_eq!(
            decode_bytes(b"caf\xe9 \x93q\x94", Some("windows-1252")),
            "café “q”"
        );
        assert_eq!(decode_bytes("café".as_bytes(), Some("utf-8")), "café");
        assert_eq!(decode_bytes(b"caf\xe9", None), "café");
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate_chars("ééé", 2), "éé…");
        assert_eq!(truncate_chars("abc", 3), "abc");
    }
}
