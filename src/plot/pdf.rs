//! Figures as PDF: an SVG written by this module converted with svg2pdf (vector output, the
//! embedded DejaVu Sans as the sans-serif family, so no system font is needed).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use svg2pdf::usvg::{self, fontdb};

use crate::error::{Error, Result};
use crate::params::io::write_atomic;

/// The font database: DejaVu Sans (regular and bold) answering for `sans-serif`.
fn fonts() -> Arc<fontdb::Database> {
    static DB: OnceLock<Arc<fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = fontdb::Database::new();
        db.load_font_data(dejavu::sans::regular().to_vec());
        db.load_font_data(dejavu::sans::bold().to_vec());
        db.set_sans_serif_family("DejaVu Sans");
        Arc::new(db)
    })
    .clone()
}

/// The PDF of `svg`; errors name `path` (the SVG's file).
pub fn svg_to_pdf(svg: &str, path: &Path) -> Result<Vec<u8>> {
    let options = usvg::Options {
        fontdb: fonts(),
        ..Default::default()
    };
    let tree = usvg::Tree::from_str(svg, &options)
        .map_err(|e| Error::data(path, format!("not a readable SVG: {e}")))?;
    svg2pdf::to_pdf(&tree, Default::default(), Default::default())
        .map_err(|e| Error::data(path, format!("cannot convert to PDF: {e}")))
}

/// Writes `svg_path`'s figure as PDF beside it (same name, `.pdf`), atomically; returns the
/// PDF's path.
pub fn write_pdf_beside(svg_path: &Path) -> Result<std::path::PathBuf> {
    let svg = std::fs::read_to_string(svg_path).map_err(|e| Error::io(svg_path, e))?;
    let pdf = svg_to_pdf(&svg, svg_path)?;
    let out = svg_path.with_extension("pdf");
    write_atomic(&out, &pdf)?;
    Ok(out)
}
