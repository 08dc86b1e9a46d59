//! IDX files (the MNIST container format, LeCun et al. 1998, <http://yann.lecun.com/exdb/mnist/>).
//!
//! Layout: a big-endian `u32` magic `0x0000_08NN` (two zero bytes, the element type `0x08` =
//! unsigned byte, the number of dimensions `NN`), then `NN` big-endian `u32` dimensions, then
//! exactly `∏ dims` bytes of data in row-major order. Images are `0x0000_0803` (`[n, rows, cols]`),
//! labels `0x0000_0801` (`[n]`).
//!
//! Files may be raw or gzip-compressed; compression is detected by the gzip magic bytes
//! (`1f 8b`), not by the file name. Every error names the file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use crate::error::{Error, Result};

/// Magic number of an IDX file of unsigned-byte images, `[n, rows, cols]`.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte labels, `[n]`.
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The two bytes that open every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// The magic number read from the file (`0x0000_08NN`).
    pub magic: u32,
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Row-major data, `dims.iter().product()` bytes.
    pub data: Vec<u8>,
}

/// Reads a whole file, decompressing it when it starts with the gzip magic bytes.
pub fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::with_capacity(raw.len().saturating_mul(4));
        MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::data(path, format!("corrupt gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses the bytes of an IDX file of unsigned bytes (any number of dimensions); `path` is only
/// used in error messages.
///
/// Checks the magic (`0x0000_08NN` with `NN ≥ 1`), that the header holds `NN` dimensions, and
/// that the data length equals the product of the dimensions exactly (truncated data and trailing
/// bytes are both errors).
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<Idx> {
    if bytes.len() < 4 {
        return Err(Error::data(
            path,
            format!(
                "not an IDX file: {} bytes, shorter than the 4-byte magic",
                bytes.len()
            ),
        ));
    }
    let magic = be_u32(&bytes[0..4]);
    let ndims = (magic & 0xff) as usize;
    if magic & 0xffff_ff00 != 0x0000_0800 || ndims == 0 {
        return Err(Error::data(
            path,
            format!(
                "not an IDX file of unsigned bytes: magic 0x{magic:08x} (expected 0x000008NN with NN ≥ 1 dimensions)"
            ),
        ));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(Error::data(
            path,
            format!(
                "truncated IDX header: {ndims} dimensions need {header} bytes, file has {}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| be_u32(c) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::data(path, format!("IDX dimensions {dims:?} overflow")))?;
    let found = bytes.len() - header;
    if found != expected {
        let what = if found < expected {
            "truncated IDX data"
        } else {
            "trailing bytes after IDX data"
        };
        return Err(Error::data(
            path,
            format!(
                "{what}: dimensions {} need {expected} data bytes, file has {found}",
                fmt_dims(&dims)
            ),
        ));
    }
    Ok(Idx {
        magic,
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Reads and parses an IDX file of unsigned bytes (raw or gzip), see [`parse_idx`].
pub fn read_idx(path: &Path) -> Result<Idx> {
    let bytes = read_bytes(path)?;
    parse_idx(path, &bytes)
}

/// Reads an IDX image file (magic `0x0000_0803`): returns `(n, rows, cols)` and the pixels.
pub fn read_images(path: &Path) -> Result<([usize; 3], Vec<u8>)> {
    let idx = read_expect(path, IMAGES_MAGIC, "images")?;
    let dims = [idx.dims[0], idx.dims[1], idx.dims[2]];
    if dims[1] == 0 || dims[2] == 0 {
        return Err(Error::data(
            path,
            format!("empty image size {}×{}", dims[1], dims[2]),
        ));
    }
    Ok((dims, idx.data))
}

/// Reads an IDX label file (magic `0x0000_0801`): one byte per sample.
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    Ok(read_expect(path, LABELS_MAGIC, "labels")?.data)
}

fn read_expect(path: &Path, magic: u32, what: &str) -> Result<Idx> {
    let idx = read_idx(path)?;
    if idx.magic != magic {
        return Err(Error::data(
            path,
            format!(
                "wrong IDX magic 0x{:08x} for {what}: expected 0x{magic:08x} ({} dimensions), found {} dimensions",
                idx.magic,
                magic & 0xff,
                idx.dims.len()
            ),
        ));
    }
    Ok(idx)
}

/// Writes an IDX file of unsigned bytes with magic `0x0000_08NN`, `NN = dims.len()`; gzip-
/// compressed when `gzip` is true. Written atomically (temporary file, then rename).
///
/// Fails when `dims` is empty or has more than 255 entries, a dimension exceeds `u32::MAX`, or
/// `data.len()` differs from the product of `dims`.
pub fn write_idx(path: &Path, dims: &[usize], data: &[u8], gzip: bool) -> Result<()> {
    if dims.is_empty() || dims.len() > 255 {
        return Err(Error::data(
            path,
            format!("cannot write IDX with {} dimensions", dims.len()),
        ));
    }
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if expected != Some(data.len()) {
        return Err(Error::data(
            path,
            format!(
                "IDX dimensions {} do not match {} data bytes",
                fmt_dims(dims),
                data.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    bytes.extend_from_slice(&(0x0000_0800u32 | dims.len() as u32).to_be_bytes());
    for &d in dims {
        let d = u32::try_from(d)
            .map_err(|_| Error::data(path, format!("IDX dimension {d} exceeds u32")))?;
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    if gzip {
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&bytes).map_err(|e| Error::io(path, e))?;
        bytes = enc.finish().map_err(|e| Error::io(path, e))?;
    }
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `<path>.tmp`, then renames it to `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn fmt_dims(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn err_text(r: Result<impl std::fmt::Debug>) -> String {
        r.expect_err("expected an error").to_string()
    }

    #[test]
    fn round_trip_raw_and_gz() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..2 * 3 * 4).map(|i| (i * 7) as u8).collect();
        for gz in [false, true] {
            let p = dir.path().join(if gz { "a.gz" } else { "a" });
            write_idx(&p, &[2, 3, 4], &data, gz).unwrap();
            let raw = std::fs::read(&p).unwrap();
            assert_eq!(raw.starts_with(&GZIP_MAGIC), gz);
            let idx = read_idx(&p).unwrap();
            assert_eq!(idx.magic, IMAGES_MAGIC);
            assert_eq!(idx.dims, vec![2, 3, 4]);
            assert_eq!(idx.data, data);
            let (dims, px) = read_images(&p).unwrap();
            assert_eq!(dims, [2, 3, 4]);
            assert_eq!(px, data);
        }
        let p = dir.path().join("labels");
        write_idx(&p, &[5], &[0, 1, 2, 3, 9], false).unwrap();
        assert_eq!(read_labels(&p).unwrap(), vec![0, 1, 2, 3, 9]);
        assert!(!dir.path().join("labels.tmp").exists());
    }

    #[test]
    fn gzip_detected_by_content_not_name() {
        let dir = tempfile::tempdir().unwrap();
        // Gzip content under a raw name, raw content under a .gz name.
        let gz_named_raw = dir.path().join("x-ubyte");
        let raw_named_gz = dir.path().join("y-ubyte.gz");
        write_idx(&gz_named_raw, &[3], &[1, 2, 3], true).unwrap();
        write_idx(&raw_named_gz, &[3], &[4, 5, 6], false).unwrap();
        assert_eq!(read_labels(&gz_named_raw).unwrap(), vec![1, 2, 3]);
        assert_eq!(read_labels(&raw_named_gz).unwrap(), vec![4, 5, 6]);
    }

    #[test]
    fn truncated_file_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("trunc-idx3-ubyte");
        write_idx(&p, &[2, 2, 2], &[1; 8], false).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let msg = err_text(read_idx(&p));
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains("truncated"), "{msg}");
        // A header cut short is also an error naming the file.
        std::fs::write(&p, &bytes[..9]).unwrap();
        let msg = err_text(read_idx(&p));
        assert!(msg.contains(&p.display().to_string()) && msg.contains("header"));
        // So is a file shorter than the magic.
        std::fs::write(&p, [0u8, 0]).unwrap();
        assert!(err_text(read_idx(&p)).contains(&p.display().to_string()));
    }

    #[test]
    fn trailing_bytes_name_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("long-idx1-ubyte.gz");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
        bytes.extend_from_slice(&3u32.to_be_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        std::fs::write(&p, enc.finish().unwrap()).unwrap();
        let msg = err_text(read_labels(&p));
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains("trailing"), "{msg}");
    }

    #[test]
    fn wrong_magic_names_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad-magic");
        std::fs::write(&p, [0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0]).unwrap();
        let msg = err_text(read_idx(&p));
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains("0x12345678"), "{msg}");
        // A valid IDX label file read as images: magic mismatch, names the file.
        write_idx(&p, &[4], &[0; 4], false).unwrap();
        let msg = err_text(read_images(&p));
        assert!(msg.contains(&p.display().to_string()) && msg.contains("magic"));
        // Corrupt gzip stream.
        std::fs::write(&p, [0x1f, 0x8b, 0, 1, 2, 3]).unwrap();
        let msg = err_text(read_idx(&p));
        assert!(msg.contains(&p.display().to_string()) && msg.contains("gzip"));
    }

    #[test]
    fn missing_file_names_path() {
        let p = Path::new("/nonexistent/modeconn/file-idx3-ubyte");
        assert!(err_text(read_idx(p)).contains("/nonexistent/modeconn/file-idx3-ubyte"));
    }

    #[test]
    fn write_rejects_bad_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w");
        assert!(write_idx(&p, &[2, 2], &[0; 3], false).is_err());
        assert!(write_idx(&p, &[], &[], false).is_err());
        assert!(!p.exists());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn parse_inverts_write(dims in proptest::collection::vec(0usize..5, 1..4), gz: bool, seed: u8) {
            let n: usize = dims.iter().product();
            let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("p");
            write_idx(&p, &dims, &data, gz).unwrap();
            let idx = read_idx(&p).unwrap();
            prop_assert_eq!(idx.dims, dims.clone());
            prop_assert_eq!(idx.magic, 0x0800 | dims.len() as u32);
            prop_assert_eq!(idx.data, data);
        }
    }
}
