//! The 8×8 handwritten digits (UCI "Optical Recognition of Handwritten Digits", Alpaydin &
//! Kaynak 1998: the 1,797-sample test part), embedded in the binary so that every command works
//! without any data files.
//!
//! The file `digits.csv.gz` is the copy shipped in the scikit-learn wheel
//! (`sklearn/datasets/data/digits.csv.gz`); see `src/data/DIGITS-LICENSE.md` for attribution and
//! licence. Each line holds 64 pixel counts in `0..=16` (row-major 8×8) and then the label.
//!
//! Split (fixed, documented, no randomness): sample `i` (0-based line number) is a test sample
//! iff `i % 4 == 3`, giving [`TRAIN_LEN`] = 1,348 training and [`TEST_LEN`] = 449 test samples.
//! Unit scaling divides by [`MAX_VALUE`] = 16.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use super::RawImages;
use crate::error::{Error, Result};

/// The gzip-compressed CSV, as shipped by scikit-learn.
static DIGITS_CSV_GZ: &[u8] = include_bytes!("digits.csv.gz");

/// Name used for the embedded file in error messages.
const EMBEDDED: &str = "<embedded>/src/data/digits.csv.gz";

/// Total number of samples.
pub const LEN: usize = 1_797;
/// Number of training samples (`i % 4 != 3`).
pub const TRAIN_LEN: usize = 1_348;
/// Number of test samples (`i % 4 == 3`: `i = 3, 7, …, 1795`).
pub const TEST_LEN: usize = 449;
/// Image shape `[channels, height, width]`.
pub const SHAPE: [usize; 3] = [1, 8, 8];
/// Largest pixel value (a count of "on" pixels in a 4×4 block).
pub const MAX_VALUE: u8 = 16;
/// Number of classes.
pub const CLASSES: usize = 10;

/// Whether sample `i` belongs to the test set (`i % 4 == 3`).
pub fn is_test(i: usize) -> bool {
    i % 4 == 3
}

/// Decodes the embedded CSV: all [`LEN`] samples in file order, pixels `[LEN, 64]` and labels.
pub fn all() -> Result<RawImages> {
    let path = Path::new(EMBEDDED);
    let mut text = String::new();
    GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .map_err(|e| Error::data(path, format!("corrupt gzip stream: {e}")))?;
    let dim: usize = SHAPE.iter().product();
    let mut pixels = Vec::with_capacity(LEN * dim);
    let mut labels = Vec::with_capacity(LEN);
    for (line_no, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |msg: String| Error::data(path, format!("line {}: {msg}", line_no + 1));
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != dim + 1 {
            return Err(at(format!("{} fields, expected {}", fields.len(), dim + 1)));
        }
        for f in &fields[..dim] {
            pixels.push(
                parse_int(f, MAX_VALUE).ok_or_else(|| {
                    at(format!("pixel `{f}` is not an integer in 0..={MAX_VALUE}"))
                })?,
            );
        }
        let label = fields[dim];
        labels.push(
            parse_int(label, (CLASSES - 1) as u8)
                .ok_or_else(|| at(format!("label `{label}` is not in 0..{CLASSES}")))?,
        );
    }
    if labels.len() != LEN {
        return Err(Error::data(
            path,
            format!("{} samples, expected {LEN}", labels.len()),
        ));
    }
    Ok(RawImages {
        pixels,
        labels,
        shape: SHAPE,
        max: f32::from(MAX_VALUE),
    })
}

/// Loads the embedded set and splits it: `(train, test)` with [`TRAIN_LEN`] and [`TEST_LEN`]
/// samples, each in file order.
pub fn load() -> Result<(RawImages, RawImages)> {
    let all = all()?;
    let dim: usize = SHAPE.iter().product();
    let mut parts = [
        RawImages::empty(SHAPE, all.max),
        RawImages::empty(SHAPE, all.max),
    ];
    for (i, (px, &y)) in all.pixels.chunks_exact(dim).zip(&all.labels).enumerate() {
        let part = &mut parts[usize::from(is_test(i))];
        part.pixels.extend_from_slice(px);
        part.labels.push(y);
    }
    let [train, test] = parts;
    Ok((train, test))
}

/// Parses an integer in `0..=max`, also accepting a float spelling such as `3.0`.
fn parse_int(s: &str, max: u8) -> Option<u8> {
    let s = s.trim();
    let v = match s.parse::<u8>() {
        Ok(v) => v,
        Err(_) => {
            let f = s.parse::<f64>().ok()?;
            if !(f.fract() == 0.0 && (0.0..=f64::from(max)).contains(&f)) {
                return None;
            }
            f as u8
        }
    };
    (v <= max).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataConfig, Pixels, Source, load};

    #[test]
    fn embedded_digits_sizes_and_split() {
        let all = all().unwrap();
        assert_eq!(all.labels.len(), LEN);
        assert_eq!(all.pixels.len(), LEN * 64);
        let (train, test) = super::load().unwrap();
        assert_eq!(train.labels.len(), TRAIN_LEN);
        assert_eq!(test.labels.len(), TEST_LEN);
        assert_eq!((0..LEN).filter(|&i| is_test(i)).count(), TEST_LEN);
        // Test sample k is sample 4k+3 of the file.
        assert_eq!(test.labels[0], all.labels[3]);
        assert_eq!(test.pixels[..64], all.pixels[3 * 64..4 * 64]);
        assert_eq!(train.labels[3], all.labels[4]);
    }

    #[test]
    fn digits_labels_and_pixels() {
        let split = load(&DataConfig {
            source: Source::Digits,
            dir: None,
            pixels: Pixels::Unit,
        })
        .unwrap();
        for d in [&split.train, &split.test] {
            assert_eq!(d.shape, [1, 8, 8]);
            assert_eq!(d.classes, 10);
            assert_eq!(d.x.len(), d.len() * 64);
            let mut counts = [0usize; 10];
            d.y.iter().for_each(|&y| counts[y as usize] += 1);
            assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
            assert!(d.x.iter().all(|&v| (0.0..=1.0).contains(&v)));
        }
        assert_eq!(split.train.len(), 1_348);
        assert_eq!(split.test.len(), 449);
        assert_eq!(split.train.name, "digits/train");
        assert_eq!(split.test.name, "digits/test");
        // Full range used: some pixel reaches 16/16 = 1.
        assert!(split.train.x.contains(&1.0));
        // The first sample is a 0 with row 0 = 0 0 5 13 9 1 0 0.
        assert_eq!(split.train.y[0], 0);
        assert_eq!(split.train.x[2], 5.0 / 16.0);
    }

    #[test]
    fn parse_int_accepts_ints_and_integral_floats() {
        assert_eq!(parse_int("16", 16), Some(16));
        assert_eq!(parse_int(" 3.0 ", 16), Some(3));
        assert_eq!(parse_int("17", 16), None);
        assert_eq!(parse_int("2.5", 16), None);
        assert_eq!(parse_int("-1", 16), None);
        assert_eq!(parse_int("x", 16), None);
    }
}
