//! Tables drawn the way etcdctl's tablewriter draws them (`-w table`): upper-case headers centred,
//! every cell right-aligned, `+---+` borders.
//!
//! Not reproduced: tablewriter wraps cells longer than 30 characters at spaces; cairn keeps them
//! on one line.

/// Renders `rows` under `headers` as a bordered table; every line ends with a newline.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let titles: Vec<String> = headers.iter().map(|h| title(h)).collect();
    let widths: Vec<usize> = titles
        .iter()
        .enumerate()
        .map(|(i, t)| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| width(c))
                .chain(std::iter::once(width(t)))
                .max()
                .unwrap_or(0)
        })
        .collect();

    let border: String = widths.iter().fold("+".to_string(), |mut line, w| {
        line.push_str(&"-".repeat(w + 2));
        line.push('+');
        line
    });

    let mut out = String::new();
    out.push_str(&border);
    out.push('\n');
    out.push_str(&line(&titles, &widths, center));
    out.push_str(&border);
    out.push('\n');
    for row in rows {
        out.push_str(&line(row, &widths, pad_left));
    }
    out.push_str(&border);
    out.push('\n');
    out
}

fn line(cells: &[String], widths: &[usize], align: fn(&str, usize) -> String) -> String {
    let mut out = "|".to_string();
    for (i, w) in widths.iter().enumerate() {
        let cell = cells.get(i).map(String::as_str).unwrap_or("");
        out.push(' ');
        out.push_str(&align(cell, *w));
        out.push_str(" |");
    }
    out.push('\n');
    out
}

fn width(s: &str) -> usize {
    s.chars().count()
}

/// tablewriter's header formatting: underscores become spaces, then upper case.
fn title(h: &str) -> String {
    h.replace('_', " ").trim().to_uppercase()
}

/// Centres `s`; an odd gap puts the extra space on the right (tablewriter's `Pad`).
fn center(s: &str, w: usize) -> String {
    let gap = w.saturating_sub(width(s));
    let left = gap / 2;
    format!("{}{s}{}", " ".repeat(left), " ".repeat(gap - left))
}

fn pad_left(s: &str, w: usize) -> String {
    format!("{}{s}", " ".repeat(w.saturating_sub(width(s))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_etcdctl_health_table() {
        let rows = vec![vec![
            "127.0.0.1:23790".to_string(),
            "true".to_string(),
            "1.93311ms".to_string(),
            String::new(),
        ]];
        let expected = "\
+-----------------+--------+-----------+-------+
|    ENDPOINT     | HEALTH |   TOOK    | ERROR |
+-----------------+--------+-----------+-------+
| 127.0.0.1:23790 |   true | 1.93311ms |       |
+-----------------+--------+-----------+-------+
";
        assert_eq!(
            render(&["endpoint", "health", "took", "error"], &rows),
            expected
        );
    }
}
