//! Generates pm's man pages and shell completions from the clap definitions, so the docs
//! cannot drift from the code: `xtask man DIR`, `xtask completions DIR`.
//! A test (`cargo test -p xtask`) fails when the committed `man/*.1` are stale.

use std::path::Path;

use anyhow::{bail, Context, Result};

mod docs;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["man", dir] => {
            for (name, text) in docs::man_pages()? {
                let p = Path::new(dir).join(name);
                std::fs::write(&p, text).with_context(|| p.display().to_string())?;
            }
            Ok(())
        }
        ["completions", dir] => {
            std::fs::create_dir_all(dir).with_context(|| dir.to_string())?;
            for (name, text) in docs::completions()? {
                let p = Path::new(dir).join(name);
                std::fs::write(&p, text).with_context(|| p.display().to_string())?;
            }
            Ok(())
        }
        _ => bail!("usage: xtask man DIR | xtask completions DIR"),
    }
}
