//! What a run's result shows of the files it wrote: the list of files created or changed
//! (with paths and resource URIs), and the figures among them inlined as PNG images, each
//! fitted under MAX_INLINE_IMAGE (downscaled when larger; the file keeps its full size).

use base64::Engine;

use super::State;
use super::contract::FileInfo;
use super::resources;
use crate::storage::Changed;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The files a run created or changed, with their absolute paths.
pub fn file_list(state: &State, changed: &[Changed]) -> Vec<FileInfo> {
    changed
        .iter()
        .map(|c| FileInfo {
            name: c.name.clone(),
            path: state
                .storage
                .path_of(&c.name)
                .to_string_lossy()
                .into_owned(),
            size: c.size,
            created: c.created,
            uri: Some(resources::uri_of(&c.name)),
        })
        .collect()
}

/// Pixels a figure may have to be decoded for downscaling (64 MB as RGBA; beyond, it is only
/// linked).
const MAX_IMAGE_PIXELS: u64 = 16_000_000;

/// A figure to inline: its name, the base64 PNG, and whether it was downscaled to fit.
pub struct Inlined {
    pub name: String,
    pub png: String,
    pub downscaled: bool,
}

/// The PNG files among `changed` (at most MAX_IMAGES, each at most MAX_IMAGE_SIZE on disk),
/// each fitted under MAX_INLINE_IMAGE encoded: as is, or downscaled (the file stays full size
/// and linked). One that cannot be read or fitted is only linked.
pub fn images_of(state: &State, changed: &[Changed]) -> Vec<Inlined> {
    let config = &state.config;
    let max_encoded = usize::try_from(config.max_inline_image).unwrap_or(usize::MAX);
    changed
        .iter()
        .filter(|c| is_png_name(&c.name) && c.size <= config.max_image_bytes)
        .filter_map(|c| {
            let bytes = state
                .storage
                .read_bytes(&c.name, config.max_image_bytes)
                .ok()?;
            if !bytes.starts_with(PNG_SIGNATURE) {
                return None;
            }
            match crate::images::fit_png(&bytes, max_encoded, MAX_IMAGE_PIXELS) {
                Ok(fitted) => Some(Inlined {
                    name: c.name.clone(),
                    png: base64::engine::general_purpose::STANDARD.encode(fitted.png),
                    downscaled: fitted.downscaled,
                }),
                Err(e) => {
                    tracing::debug!(file = %c.name, "figure not inlined: {e}");
                    None
                }
            }
        })
        .take(config.max_images)
        .collect()
}

/// Whether `name` ends in `.png`, in any case.
fn is_png_name(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".png")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_names_in_any_case() {
        assert!(is_png_name("plot.png"));
        assert!(is_png_name("PLOT.PNG"));
        assert!(!is_png_name("plot.png.txt"));
        assert!(!is_png_name("png"));
    }
}
