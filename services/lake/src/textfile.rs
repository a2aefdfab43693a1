//! The services' Prometheus textfiles under the lake (`<lake>/_metrics/*.prom`), which the API's
//! `/metrics` appends to its own. One writer for all of them, so a scraper never reads half a
//! file (each is written beside its final name, then renamed over it).

use std::path::{Path, PathBuf};

use crate::spec::LakeConfig;

/// `path` under the lake root when relative, as given when absolute.
pub fn metrics_path(lake: &LakeConfig, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        lake.root.join(path)
    }
}

/// Replace `file` with `text` (creating its directory), atomically for readers.
pub fn write_textfile(file: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = file.with_extension("prom.partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeConfig {
            root: dir.path().to_path_buf(),
            ..LakeConfig::default()
        };
        let file = metrics_path(&lake, Path::new("_metrics/x.prom"));
        assert_eq!(file, dir.path().join("_metrics/x.prom"));
        write_textfile(&file, "a 1\n").unwrap();
        write_textfile(&file, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a 2\n");
        let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no partial file left: {names:?}");
        assert_eq!(
            metrics_path(&lake, Path::new("/abs.prom")),
            PathBuf::from("/abs.prom")
        );
    }
}
