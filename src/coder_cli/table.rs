//! A short aligned text table of JSON rows, for list answers printed on a terminal.

use serde_json::Value;

/// One column: its header, the JSON pointers tried in turn for its cell, and its widest cell.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub header: &'static str,
    pub fields: &'static [&'static str],
    pub max_width: usize,
}

impl Column {
    /// A column wide enough for ids and timestamps; [`Column::at_most`] narrows free text.
    pub const fn new(header: &'static str, fields: &'static [&'static str]) -> Self {
        Column {
            header,
            fields,
            max_width: 36,
        }
    }

    pub const fn at_most(mut self, max_width: usize) -> Self {
        self.max_width = max_width;
        self
    }
}

/// Shown for a missing, null or empty field.
pub const MISSING: &str = "-";

/// The table: a header line, then one line per row; columns two spaces apart, no trailing space.
pub fn render(columns: &[Column], rows: &[Value]) -> String {
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

/// `text` cut to `max` characters, the last one an ellipsis when anything was cut.
fn truncate(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn width(text: &str) -> usize {
    text.chars().count()
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
