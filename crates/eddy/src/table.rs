//! Plain-text tables for the listing commands: a header row and left-aligned columns separated
//! by two spaces, with no trailing whitespace.

const COLUMN_GAP: &str = "  ";

/// Renders `header` and `rows` (each as long as `header`), one line each, newline-terminated.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in rows {
        debug_assert_eq!(row.len(), header.len(), "every row has one cell per column");
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header
        .iter()
        .map(|title| title.to_string())
        .collect::<Vec<_>>();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            line.push_str(COLUMN_GAP);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let rows = vec![
            vec!["hello".to_owned(), "/hello".to_owned(), "3".to_owned()],
            vec!["a".to_owned(), "/".to_owned(), "12".to_owned()],
        ];
        assert_eq!(
            render(&["NAME", "ROUTE", "VERSION"], &rows),
            "NAME   ROUTE   VERSION\n\
             hello  /hello  3\n\
             a      /       12\n"
        );
    }

    #[test]
    fn empty_last_cells_leave_no_trailing_space() {
        let rows = vec![vec!["1".to_owned(), String::new()]];
        assert_eq!(render(&["VERSION", "LIVE"], &rows), "VERSION  LIVE\n1\n");
    }
}
