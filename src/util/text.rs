//! Bounding text that came from outside before it is kept, logged or sent on.

/// `text` with at most `max` characters, marked with `…` when cut.
pub fn cut_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_at_a_character_boundary_and_marked() {
        assert_eq!(cut_chars("short", 10), "short");
        assert_eq!(cut_chars("ééééé", 3), "ééé…");
        assert_eq!(cut_chars("", 0), "");
        assert_eq!(cut_chars("x", 0), "…");
    }
}
