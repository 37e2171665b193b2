//! The request body of `--file` (a definition a person writes by hand): a JSON object read from
//! a file or stdin, under a size cap.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::cli::coder::BodyFile;
use crate::exit;

/// A request body is a definition a person writes by hand; anything this big is a wrong file.
const MAX_BODY_BYTES: u64 = 1 << 20;

/// The JSON object in `path` (`-`: stdin), or an error naming where it was read from.
fn read_body(path: &Path) -> Result<Value, String> {
    let (source, text) = if path == Path::new("-") {
        ("stdin".to_string(), read_capped(std::io::stdin().lock()))
    } else {
        (
            path.display().to_string(),
            std::fs::File::open(path).and_then(read_capped),
        )
    };
    let text = text.map_err(|err| format!("cannot read {source}: {err}"))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|err| format!("{source} does not hold valid JSON: {err}"))?;
    if !value.is_object() {
        return Err(format!(
            "{source} must hold a JSON object (the fields to send), not {}",
            match value {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ));
    }
    Ok(value)
}

fn read_capped(reader: impl Read) -> std::io::Result<String> {
    // Bytes first: a cap that cuts a multi-byte character must still read as "too large".
    let mut bytes = Vec::new();
    reader.take(MAX_BODY_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_BODY_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            MAX_BODY_BYTES / 1024
        )));
    }
    String::from_utf8(bytes)
        .map_err(|err| std::io::Error::other(format!("not UTF-8 text: {}", err.utf8_error())))
}

/// The body of `--file`, or the exit for a file that cannot be used.
pub(super) fn body_or_exit(body: &BodyFile) -> Result<Value, ExitCode> {
    read_body(&body.file).map_err(|err| {
        eprintln!("agh-worker: --file: {err}");
        ExitCode::from(exit::BAD_CONFIG)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_body_file_must_exist_and_hold_a_json_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.json");
        let err = read_body(&missing).expect_err("missing");
        assert!(err.contains("missing.json"), "{err}");
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{\"slug\": ").expect("write");
        let err = read_body(&broken).expect_err("broken");
        assert!(
            err.contains("broken.json") && err.contains("valid JSON"),
            "{err}"
        );
        let array = dir.path().join("array.json");
        std::fs::write(&array, "[1]").expect("write");
        let err = read_body(&array).expect_err("array");
        assert!(err.contains("an array"), "{err}");
        let good = dir.path().join("good.json");
        std::fs::write(&good, "{\"slug\": \"reviewer\"}").expect("write");
        assert_eq!(read_body(&good), Ok(json!({"slug": "reviewer"})));
    }

    #[test]
    fn a_body_larger_than_the_cap_is_refused() {
        let big = vec![b' '; usize::try_from(MAX_BODY_BYTES).unwrap_or(0) + 1];
        let err = read_capped(big.as_slice()).expect_err("too big");
        assert!(err.to_string().contains("1024 KiB"), "{err}");
        assert!(read_capped(&b"{}"[..]).is_ok());
    }

    #[test]
    fn a_large_body_cut_inside_a_character_is_still_reported_as_too_large() {
        // 'é' is two bytes: the cap falls in the middle of one.
        let big = "é".repeat(usize::try_from(MAX_BODY_BYTES).unwrap_or(0) / 2 + 1);
        let err = read_capped(big.as_bytes()).expect_err("too big");
        assert!(err.to_string().contains("1024 KiB"), "{err}");
        let err = read_capped(&[0xff, 0xfe][..]).expect_err("not text");
        assert!(err.to_string().contains("not UTF-8"), "{err}");
    }
}
