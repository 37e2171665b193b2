//! A provider command split as AGH splits it: shell-style words (quotes and backslashes), never
//! through a shell (`internal/acp/client.go` ~1379-1388).

/// Splits `command` into words; an unclosed quote is an error naming it.
pub fn split(command: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => {
                            return Err(format!("unclosed ' in the provider command {command:?}"));
                        }
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => {
                                return Err(format!(
                                    "unclosed \" in the provider command {command:?}"
                                ));
                            }
                        },
                        Some(c) => word.push(c),
                        None => {
                            return Err(format!("unclosed \" in the provider command {command:?}"));
                        }
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err("the provider command is empty".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_splits_into_words_with_quotes_kept_together() {
        assert_eq!(
            split(r#"agh-worker --config "/etc/a b.toml" acp 'x y' z\ w"#).expect("splits"),
            vec![
                "agh-worker",
                "--config",
                "/etc/a b.toml",
                "acp",
                "x y",
                "z w"
            ]
        );
    }

    #[test]
    fn an_unclosed_quote_or_an_empty_command_is_refused() {
        assert!(split("agh-worker 'acp").is_err());
        assert!(split("   ").is_err());
    }
}
