//! CIFAR-10 (Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images"), binary
//! version.
//!
//! Each batch file is a sequence of [`RECORD_LEN`] = 3,073-byte records: one label byte in `0..10`
//! then 3,072 pixel bytes, channel-major (1,024 red, 1,024 green, 1,024 blue, each 32×32
//! row-major), i.e. `[3, 32, 32]`. The training set is [`TRAIN_FILES`] concatenated in order, the
//! test set [`TEST_FILE`]. The directory (default `data/cifar10`) may hold the files directly or in
//! the `cifar-10-batches-bin/` folder of the official archive. No package registry ships CIFAR-10,
//! so it has to be downloaded by hand from <https://www.cs.toronto.edu/~kriz/cifar.html>.

use std::path::{Path, PathBuf};

use super::{RawImages, idx};
use crate::error::{Error, Result};

/// Image shape `[channels, height, width]`.
pub const SHAPE: [usize; 3] = [3, 32, 32];
/// Bytes per image.
pub const IMAGE_LEN: usize = 3 * 32 * 32;
/// Bytes per record: the label byte and the image.
pub const RECORD_LEN: usize = 1 + IMAGE_LEN;
/// Number of classes.
pub const CLASSES: usize = 10;
/// Training batch file names, in order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// Test batch file name.
pub const TEST_FILE: &str = "test_batch.bin";
/// Sub-folder of the official archive, also searched.
pub const ARCHIVE_DIR: &str = "cifar-10-batches-bin";

/// Reads one batch file (raw or gzip, detected by content). Its length must be a positive
/// multiple of [`RECORD_LEN`] and every label below [`CLASSES`].
pub fn read_batch(path: &Path) -> Result<RawImages> {
    let bytes = idx::read_bytes(path)?;
    if bytes.is_empty() || bytes.len() % RECORD_LEN != 0 {
        return Err(Error::data(
            path,
            format!(
                "not a CIFAR-10 binary batch: {} bytes is not a positive multiple of the {RECORD_LEN}-byte record",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / RECORD_LEN;
    let mut out = RawImages::empty(SHAPE, 255.0);
    out.pixels.reserve(n * IMAGE_LEN);
    out.labels.reserve(n);
    for rec in bytes.chunks_exact(RECORD_LEN) {
        out.labels.push(rec[0]);
        out.pixels.extend_from_slice(&rec[1..]);
    }
    super::check_labels(path, &out.labels, CLASSES)?;
    Ok(out)
}

/// Writes a batch file in the binary format (used by tests to make small data sets).
/// `pixels` holds `labels.len()` images of [`IMAGE_LEN`] bytes, CHW.
pub fn write_batch(path: &Path, labels: &[u8], pixels: &[u8]) -> Result<()> {
    if pixels.len() != labels.len() * IMAGE_LEN {
        return Err(Error::data(
            path,
            format!(
                "{} pixel bytes for {} labels, expected {}",
                pixels.len(),
                labels.len(),
                labels.len() * IMAGE_LEN
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(labels.len() * RECORD_LEN);
    for (&y, px) in labels.iter().zip(pixels.chunks_exact(IMAGE_LEN)) {
        bytes.push(y);
        bytes.extend_from_slice(px);
    }
    idx::write_atomic(path, &bytes)
}

/// The folder that holds the batches: `dir` itself, or `dir/cifar-10-batches-bin`.
pub fn resolve_dir(dir: &Path) -> Result<PathBuf> {
    let has_files = |d: &Path| d.join(TRAIN_FILES[0]).is_file() || d.join(TEST_FILE).is_file();
    if has_files(dir) {
        return Ok(dir.to_path_buf());
    }
    let sub = dir.join(ARCHIVE_DIR);
    if has_files(&sub) {
        return Ok(sub);
    }
    Err(missing(dir, &dir.join(TRAIN_FILES[0])))
}

fn missing(dir: &Path, file: &Path) -> Error {
    Error::data(
        file,
        format!(
            "not found (also looked in {}/{ARCHIVE_DIR}/); no package registry ships CIFAR-10: \
             download the binary version (cifar-10-binary.tar.gz) from \
             https://www.cs.toronto.edu/~kriz/cifar.html and unpack it into {}",
            dir.display(),
            dir.display()
        ),
    )
}

/// Loads the training (five batches) and test sets from `dir` (see the module docs).
pub fn load_dir(dir: &Path) -> Result<(RawImages, RawImages)> {
    let root = resolve_dir(dir)?;
    let file = |name: &str| {
        let p = root.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(missing(dir, &p))
        }
    };
    let mut train = RawImages::empty(SHAPE, 255.0);
    for name in TRAIN_FILES {
        let b = read_batch(&file(name)?)?;
        train.pixels.extend_from_slice(&b.pixels);
        train.labels.extend_from_slice(&b.labels);
    }
    let test = read_batch(&file(TEST_FILE)?)?;
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataConfig, Pixels, Source, load};

    fn images(n: usize, seed: u8) -> (Vec<u8>, Vec<u8>) {
        let labels = (0..n).map(|i| (i % 10) as u8).collect();
        let pixels = (0..n * IMAGE_LEN)
            .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
            .collect();
        (labels, pixels)
    }

    #[test]
    fn batch_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.bin");
        let (y, x) = images(4, 7);
        write_batch(&p, &y, &x).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 4 * 3073);
        let b = read_batch(&p).unwrap();
        assert_eq!(b.labels, y);
        assert_eq!(b.pixels, x);
        assert_eq!(b.shape, [3, 32, 32]);
    }

    #[test]
    fn bad_length_and_label_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.bin");
        let (y, x) = images(2, 0);
        write_batch(&p, &y, &x).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.push(0);
        std::fs::write(&p, &bytes).unwrap();
        let err = read_batch(&p).unwrap_err().to_string();
        assert!(err.contains(&p.display().to_string()), "{err}");
        assert!(err.contains("3073"), "{err}");
        std::fs::write(&p, []).unwrap();
        assert!(
            read_batch(&p)
                .unwrap_err()
                .to_string()
                .contains(&p.display().to_string())
        );
        write_batch(&p, &[3, 11], &x).unwrap();
        let err = read_batch(&p).unwrap_err().to_string();
        assert!(err.contains(&p.display().to_string()) && err.contains("11"));
    }

    #[test]
    fn loads_dir_and_archive_subfolder() {
        for sub in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let root = if sub {
                dir.path().join(ARCHIVE_DIR)
            } else {
                dir.path().to_path_buf()
            };
            std::fs::create_dir_all(&root).unwrap();
            for (k, name) in TRAIN_FILES.iter().enumerate() {
                let (y, x) = images(2, k as u8);
                write_batch(&root.join(name), &y, &x).unwrap();
            }
            let (y, x) = images(3, 99);
            write_batch(&root.join(TEST_FILE), &y, &x).unwrap();
            let split = load(&DataConfig {
                source: Source::Cifar10,
                dir: Some(dir.path().to_path_buf()),
                pixels: Pixels::Unit,
            })
            .unwrap();
            assert_eq!(split.train.len(), 10);
            assert_eq!(split.test.len(), 3);
            assert_eq!(split.train.shape, [3, 32, 32]);
            assert_eq!(split.train.name, "cifar10/train");
            assert_eq!(split.test.x[1], f32::from(x[1]) / 255.0);
            // Batch order is kept: sample 2 is batch 2's first image.
            assert_eq!(split.train.x[2 * IMAGE_LEN], f32::from(1u8) / 255.0);
        }
    }

    #[test]
    fn missing_batch_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("data_batch_1.bin"), "{err}");
        let (y, x) = images(1, 0);
        for name in TRAIN_FILES {
            write_batch(&dir.path().join(name), &y, &x).unwrap();
        }
        let err = load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains(TEST_FILE), "{err}");
    }
}
