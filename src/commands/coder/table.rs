//! A short aligned text table of JSON rows, for list answers printed on a terminal.

use serde_json::Value;

/// One column: its header, the JSON pointers tried in turn for its cell, and its widest cell.
#[derive(Clone, Copy, Debug)]
pub(super) struct Column {
    pub header: &'static str,
    pub fields: &'static [&'static str],
    pub max_width: usize,
}

impl Column {
    /// A column wide enough for ids and timestamps; [`Column::at_most`] narrows free text.
    pub(super) const fn new(header: &'static str, fields: &'static [&'static str]) -> Self {
        Column {
            header,
            fields,
            max_width: 36,
        }
    }

    pub(super) const fn at_most(mut self, max_width: usize) -> Self {
        self.max_width = max_width;
        self
    }
}

/// Shown for a missing, null or empty field.
pub(super) const MISSING: &str = "-";

/// The table: a header line, then one line per row; columns two spaces apart, no trailing space.
pub(super) fn render(columns: &[Column], rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|column| cell(column, row)).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(index, column)| {
            cells
                .iter()
                .map(|line| width(&line[index]))
                .chain([width(column.header)])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let headers: Vec<String> = columns.iter().map(|c| c.header.to_string()).collect();
    let mut out = String::new();
    for line in std::iter::once(&headers).chain(&cells) {
        let mut text = String::new();
        for (cell, width) in line.iter().zip(&widths) {
            if !text.is_empty() {
                text.push_str("  ");
            }
            text.push_str(cell);
            text.extend(std::iter::repeat_n(
                ' ',
                width.saturating_sub(self::width(cell)),
            ));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// The first of the column's fields the row has, on one line, cut to the column's width.
fn cell(column: &Column, row: &Value) -> String {
    let text = column
        .fields
        .iter()
        .filter_map(|field| row.pointer(field))
        .find_map(|value| match value {
            Value::Null => None,
            Value::String(text) if text.trim().is_empty() => None,
            Value::String(text) => Some(text.clone()),
            other => Some(other.to_string()),
        })
        .unwrap_or_else(|| MISSING.to_string());
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    truncate(one_line.trim(), column.max_width)
}

/// `text` cut to `max` terminal columns, the last one an ellipsis when anything was cut.
fn truncate(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_string();
    }
    let room = max.saturating_sub(1);
    let mut cut = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = char_width(c);
        if used + w > room {
            break;
        }
        used += w;
        cut.push(c);
    }
    cut.push('…');
    cut
}

/// Terminal columns `text` takes.
fn width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

/// Terminal columns of one character: 2 for East Asian wide and most emoji, 0 for combining
/// marks and zero-width characters, else 1. The common ranges, not the full Unicode tables: this
/// only lines up an operator's table.
fn char_width(c: char) -> usize {
    match u32::from(c) {
        0x0300..=0x036F | 0x200B..=0x200F | 0x20D0..=0x20FF | 0xFE00..=0xFE0F => 0,
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const COLUMNS: &[Column] = &[
        Column::new("ID", &["/id"]),
        Column::new("STATUS", &["/status", "/state"]),
        Column::new("LABEL", &["/label"]).at_most(8),
    ];

    #[test]
    fn columns_line_up_under_their_headers_without_trailing_spaces() {
        let rows = [
            json!({"id": "codesess_1", "status": "active", "label": "fix"}),
            json!({"id": "c2", "status": "archived", "label": "docs"}),
        ];
        assert_eq!(
            render(COLUMNS, &rows),
            "ID          STATUS    LABEL\n\
             codesess_1  active    fix\n\
             c2          archived  docs\n"
        );
    }

    #[test]
    fn wide_characters_take_two_columns_so_later_columns_still_line_up() {
        let rows = [
            json!({"id": "修复登录", "status": "active", "label": "x"}),
            json!({"id": "c2", "status": "paused", "label": "y"}),
        ];
        assert_eq!(
            render(COLUMNS, &rows),
            "ID        STATUS  LABEL\n\
             修复登录  active  x\n\
             c2        paused  y\n"
        );
        // Cut by columns, not characters: in four, one wide character and the ellipsis fit, two do not.
        assert_eq!(truncate("修复登录", 4), "修…");
        assert_eq!(truncate("e\u{301}tude", 6), "e\u{301}tude");
    }

    #[test]
    fn long_cells_are_cut_to_the_column_width_with_an_ellipsis() {
        let rows = [json!({"id": "a", "status": "s", "label": "a long label here"})];
        let text = render(COLUMNS, &rows);
        assert!(text.ends_with("a   s       a long …\n"), "{text:?}");
        assert_eq!(truncate("exactly8", 8), "exactly8");
        assert_eq!(truncate("ünïcödé!!", 8), "ünïcödé…");
    }

    #[test]
    fn missing_null_and_blank_fields_are_shown_as_a_dash() {
        let rows = [json!({"id": "x", "status": null, "label": "  "})];
        assert_eq!(render(COLUMNS, &rows), "ID  STATUS  LABEL\nx   -       -\n");
        let rows = [json!({})];
        assert_eq!(render(COLUMNS, &rows), "ID  STATUS  LABEL\n-   -       -\n");
    }

    #[test]
    fn a_later_field_stands_in_when_the_first_is_absent() {
        let rows = [json!({"id": "x", "state": "running"})];
        assert!(render(COLUMNS, &rows).contains("x   running"));
    }

    #[test]
    fn numbers_booleans_and_multi_line_text_fit_on_one_line() {
        let columns = [
            Column::new("N", &["/n"]),
            Column::new("OK", &["/ok"]),
            Column::new("TEXT", &["/text"]),
        ];
        let rows = [json!({"n": 0.5, "ok": false, "text": "one\ntwo"})];
        assert_eq!(
            render(&columns, &rows),
            "N    OK     TEXT\n0.5  false  one two\n"
        );
    }

    #[test]
    fn no_rows_print_the_header_alone() {
        assert_eq!(render(COLUMNS, &[]), "ID  STATUS  LABEL\n");
    }
}
