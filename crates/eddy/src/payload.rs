//! The message argument of the commands that send one (`eddy queue send`, `eddy ws send`):
//! literal text, `@FILE` for the bytes of a file, or `-` for standard input, as curl's
//! `--data`.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};

/// Where a message is taken from.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Text(String),
    File(PathBuf),
    Stdin,
}

impl Payload {
    /// Parses the DATA argument: `-` is standard input and `@FILE` a file; anything else is
    /// the message itself.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value == "-" {
            return Ok(Self::Stdin);
        }
        match value.strip_prefix('@') {
            Some("") => Err("`@` needs a file name after it, e.g. @order.json".to_owned()),
            Some(path) => Ok(Self::File(path.into())),
            None => Ok(Self::Text(value.to_owned())),
        }
    }

    /// The message's bytes. Standard input is read to its end, with a hint on stderr when a
    /// person would otherwise face a silent prompt.
    pub fn read(&self) -> Result<Vec<u8>> {
        match self {
            Self::Text(text) => Ok(text.clone().into_bytes()),
            Self::File(path) => std::fs::read(path).map_err(|err| {
                anyhow!(
                    "cannot read the message from {}: {err} — check the path after @",
                    path.display()
                )
            }),
            Self::Stdin => {
                let mut stdin = std::io::stdin();
                if stdin.is_terminal() {
                    eprintln!("reading the message from standard input; end it with Ctrl-D");
                }
                let mut body = Vec::new();
                stdin
                    .read_to_end(&mut body)
                    .context("cannot read the message from standard input — pass DATA or @FILE")?;
                Ok(body)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_text_a_file_or_stdin() {
        assert_eq!(Payload::parse("-"), Ok(Payload::Stdin));
        assert_eq!(
            Payload::parse("@order.json"),
            Ok(Payload::File("order.json".into()))
        );
        assert_eq!(
            Payload::parse("{\"id\": 1}"),
            Ok(Payload::Text("{\"id\": 1}".into()))
        );
        assert!(
            Payload::parse("@")
                .unwrap_err()
                .contains("needs a file name")
        );
    }

    #[test]
    fn a_file_payload_is_its_bytes_and_a_missing_one_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("message.bin");
        std::fs::write(&path, [0xff, 0x00]).unwrap();
        assert_eq!(Payload::File(path).read().unwrap(), [0xff, 0x00]);
        let missing = Payload::File(dir.path().join("nope"))
            .read()
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("cannot read the message from "),
            "{missing}"
        );
        assert!(missing.ends_with("— check the path after @"), "{missing}");
    }
}
