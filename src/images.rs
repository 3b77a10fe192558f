//! Bounded images: [`fit_png`] fits a PNG under a cap on its base64 size so a figure can be
//! inlined in a tool result. It refuses non-PNG data and decompression bombs (from the header,
//! before any pixel is decoded), and otherwise downscales (aspect kept) and re-encodes until the
//! image fits. Pure: bytes in, bytes out.

use std::io::Cursor;

use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, Limits};

use crate::error::ImageError;

/// The eight bytes every PNG starts with.
const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
/// Downscaling stops when the short side would go below this many pixels.
pub const MIN_SIDE: u32 = 16;
/// Each attempt aims this far below the cap (on each side), since PNG size is not exactly
/// proportional to the pixel count.
const MARGIN: f64 = 0.9;
/// Bytes per pixel of the widest decoded layout (16-bit RGBA), for the allocation limit.
const MAX_BYTES_PER_PIXEL: u64 = 8;
/// Room for the decoder's own buffers besides the image.
const DECODER_SLACK: u64 = 16 << 20;

/// A PNG fitted under a cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    /// The PNG to inline: the input itself, or a downscaled re-encoding.
    pub png: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub original_width: u32,
    pub original_height: u32,
    /// Whether `png` is a smaller copy (then the caller should also link the full-size file).
    pub downscaled: bool,
}

/// Length of the base64 (standard, padded) encoding of `n` bytes.
pub fn encoded_len(n: usize) -> usize {
    n.div_ceil(3).saturating_mul(4)
}

/// `png` as is when its base64 encoding is at most `max_encoded` bytes; otherwise decoded and
/// downscaled (aspect ratio kept, Triangle filter) and re-encoded until its base64 encoding fits.
///
/// Refuses, with an [`ImageError`]: data that is not a PNG ([`ImageError::NotPng`]); a PNG whose
/// header declares more than `max_pixels` pixels, checked before anything is decoded (also when
/// it would be passed through as is, since the client decodes it) ([`ImageError::TooManyPixels`]);
/// a PNG the decoder rejects ([`ImageError::Invalid`]).
///
/// Stopping rule: each attempt scales from the original by the size ratio, `sqrt(max/size) *
/// 0.9` times the previous scale (so the sides shrink by at least 10% each time), and never goes
/// below [`MIN_SIDE`] pixels on the short side. If the image still does not fit at that size it
/// is not inlined at all: [`ImageError::CannotFit`] (an image over the cap is never returned).
pub fn fit_png(png: &[u8], max_encoded: usize, max_pixels: u64) -> Result<Fitted, ImageError> {
    let (width, height) = check_header(png, max_pixels)?;
    if encoded_len(png.len()) <= max_encoded {
        // The decoder reads the header only: a corrupt one is refused, no pixel is decoded.
        reader(png, max_pixels)
            .into_dimensions()
            .map_err(|source| ImageError::Invalid { source })?;
        return Ok(Fitted {
            png: png.to_vec(),
            width,
            height,
            original_width: width,
            original_height: height,
            downscaled: false,
        });
    }
    // `decode` reserves the whole image against the limits before allocating it.
    let image = reader(png, max_pixels)
        .decode()
        .map_err(|source| ImageError::Invalid { source })?;
    downscale_until_fits(&image, encoded_len(png.len()), max_encoded)
}

/// Checks the signature and the size the IHDR chunk declares; returns that size.
fn check_header(png: &[u8], max_pixels: u64) -> Result<(u32, u32), ImageError> {
    if !png.starts_with(PNG_SIGNATURE) {
        return Err(ImageError::NotPng);
    }
    // Signature, chunk length (4), chunk type "IHDR" (4), width (4, big-endian), height (4).
    let (Some(w), Some(h), Some(b"IHDR")) = (png.get(16..20), png.get(20..24), png.get(12..16))
    else {
        return Err(ImageError::NotPng);
    };
    let width = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
    let height = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            pixels,
            max_pixels,
        });
    }
    Ok((width, height))
}

/// A PNG reader over `png` with limits that refuse an image of more than `max_pixels` pixels
/// before allocating it (a second guard after [`check_header`]): no side longer than
/// `max_pixels`, no more than `max_pixels` of the widest pixels (16-bit RGBA) plus the decoder's
/// own buffers.
fn reader(png: &[u8], max_pixels: u64) -> ImageReader<Cursor<&[u8]>> {
    let side = u32::try_from(max_pixels).unwrap_or(u32::MAX);
    let mut limits = Limits::default();
    limits.max_image_width = Some(side);
    limits.max_image_height = Some(side);
    limits.max_alloc = Some(
        max_pixels
            .saturating_mul(MAX_BYTES_PER_PIXEL)
            .saturating_add(DECODER_SLACK),
    );
    let mut reader = ImageReader::with_format(Cursor::new(png), ImageFormat::Png);
    reader.limits(limits);
    reader
}

/// Downscales `image` (whose PNG took `encoded` base64 bytes) until its re-encoding fits.
fn downscale_until_fits(
    image: &DynamicImage,
    mut encoded: usize,
    max_encoded: usize,
) -> Result<Fitted, ImageError> {
    let (original_width, original_height) = (image.width(), image.height());
    let mut current = (original_width, original_height);
    let mut scale = 1.0_f64;
    loop {
        scale *= (max_encoded as f64 / encoded as f64).sqrt() * MARGIN;
        let Some((width, height)) = next_size(original_width, original_height, scale, current)
        else {
            return Err(ImageError::CannotFit {
                width: current.0,
                height: current.1,
                encoded,
                max_encoded,
            });
        };
        let png = encode(&image.resize_exact(width, height, FilterType::Triangle))?;
        encoded = encoded_len(png.len());
        current = (width, height);
        if encoded <= max_encoded {
            return Ok(Fitted {
                png,
                width,
                height,
                original_width,
                original_height,
                downscaled: true,
            });
        }
    }
}

/// The size for `scale` of the original, with the short side at least [`MIN_SIDE`] (or the
/// original short side, if smaller); `None` when that is not smaller than `current`.
fn next_size(width: u32, height: u32, scale: f64, current: (u32, u32)) -> Option<(u32, u32)> {
    let short = width.min(height);
    let floor = f64::from(MIN_SIDE.min(short)) / f64::from(short);
    let scale = scale.max(floor);
    let side = |n: u32| ((f64::from(n) * scale).round() as u32).clamp(1, n);
    let next = (side(width), side(height));
    (next.0 < current.0 || next.1 < current.1).then_some(next)
}

/// Encodes `image` as a PNG (default compression, adaptive filtering).
fn encode(image: &DynamicImage) -> Result<Vec<u8>, ImageError> {
    let mut png = Vec::new();
    let encoder =
        PngEncoder::new_with_quality(&mut png, CompressionType::Default, PngFilter::Adaptive);
    image
        .write_with_encoder(encoder)
        .map_err(|source| ImageError::Encode { source })?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GenericImageView, RgbImage};

    const CAP: usize = 256 * 1024;
    const MAX_PIXELS: u64 = 50_000_000;

    /// A 2000x1500 RGB image, a gradient under noise, deterministic (xorshift).
    fn noisy_png() -> Vec<u8> {
        let mut state: u32 = 0x9e37_79b9;
        let image = RgbImage::from_fn(2000, 1500, |x, y| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let [a, b, c, _] = state.to_le_bytes();
            image::Rgb([(x / 8) as u8 ^ a, (y / 6) as u8 ^ b, c])
        });
        encode(&DynamicImage::ImageRgb8(image)).unwrap()
    }

    fn tiny_png() -> Vec<u8> {
        let image = RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 * 60, y as u8 * 80, 7]));
        encode(&DynamicImage::ImageRgb8(image)).unwrap()
    }

    /// A valid 1x1 PNG whose IHDR is patched to declare `width` x `height` (CRC fixed), so only
    /// its header is believable: decoding its pixels would fail.
    fn bomb_png(width: u32, height: u32) -> Vec<u8> {
        let mut png = tiny_png();
        png[16..20].copy_from_slice(&width.to_be_bytes());
        png[20..24].copy_from_slice(&height.to_be_bytes());
        // The CRC covers the chunk type and data: bytes 12..29 (4 + 13), stored at 29..33.
        let crc = crc32fast::hash(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        png
    }

    #[test]
    fn encoded_len_is_base64_length() {
        assert_eq!(encoded_len(0), 0);
        assert_eq!(encoded_len(1), 4);
        assert_eq!(encoded_len(3), 4);
        assert_eq!(encoded_len(4), 8);
        use base64::Engine;
        let data = vec![0u8; 1000];
        let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
        assert_eq!(encoded_len(data.len()), b64.len());
    }

    #[test]
    fn small_png_is_returned_byte_identical() {
        let png = tiny_png();
        let fitted = fit_png(&png, CAP, MAX_PIXELS).unwrap();
        assert_eq!(fitted.png, png);
        assert!(!fitted.downscaled);
        assert_eq!((fitted.width, fitted.height), (4, 3));
        assert_eq!((fitted.original_width, fitted.original_height), (4, 3));
    }

    #[test]
    fn large_png_is_downscaled_under_the_cap_with_its_aspect_kept() {
        let png = noisy_png();
        assert!(
            png.len() > 1024 * 1024,
            "test image only {} bytes",
            png.len()
        );
        let fitted = fit_png(&png, CAP, MAX_PIXELS).unwrap();
        assert!(fitted.downscaled);
        assert!(encoded_len(fitted.png.len()) <= CAP);
        assert_eq!(
            (fitted.original_width, fitted.original_height),
            (2000, 1500)
        );
        assert!(fitted.width < 2000 && fitted.height < 1500);
        // 4:3 kept within a pixel.
        let expected_height = f64::from(fitted.width) * 1500.0 / 2000.0;
        assert!((f64::from(fitted.height) - expected_height).abs() <= 1.0);
        let decoded = image::load_from_memory_with_format(&fitted.png, ImageFormat::Png).unwrap();
        assert_eq!(decoded.dimensions(), (fitted.width, fitted.height));
    }

    #[test]
    fn a_png_that_cannot_fit_at_the_smallest_size_is_refused() {
        let err = fit_png(&noisy_png(), 100, MAX_PIXELS).unwrap_err();
        let ImageError::CannotFit { width, height, .. } = err else {
            panic!("expected CannotFit, got {err:?}");
        };
        assert_eq!(height, MIN_SIDE);
        assert!(width.abs_diff(21) <= 1, "width {width}");
    }

    #[test]
    fn non_png_input_is_refused() {
        for data in [&b""[..], b"GIF89a not a png at all", b"\x89PNG\r\n\x1a\n"] {
            let err = fit_png(data, CAP, MAX_PIXELS).unwrap_err();
            assert!(matches!(err, ImageError::NotPng), "{err:?}");
        }
        let mut jpeg_like = vec![0xff, 0xd8, 0xff, 0xe0];
        jpeg_like.resize(2000, 0);
        assert!(matches!(
            fit_png(&jpeg_like, 10, MAX_PIXELS),
            Err(ImageError::NotPng)
        ));
    }

    #[test]
    fn corrupt_png_is_refused_as_invalid() {
        let mut png = tiny_png();
        png[29] ^= 0xff; // the IHDR CRC
        let err = fit_png(&png, CAP, MAX_PIXELS).unwrap_err();
        assert!(matches!(err, ImageError::Invalid { .. }), "{err:?}");
    }

    #[test]
    fn huge_declared_size_is_refused_before_decoding() {
        // The header is valid, the pixel data is one pixel: had the decoder been asked for the
        // pixels it would have failed with Invalid (or tried to allocate 40 GB).
        let png = bomb_png(100_000, 100_000);
        for cap in [CAP, 10] {
            let err = fit_png(&png, cap, MAX_PIXELS).unwrap_err();
            let ImageError::TooManyPixels {
                width,
                height,
                pixels,
                max_pixels,
            } = err
            else {
                panic!("expected TooManyPixels, got {err:?}");
            };
            assert_eq!((width, height, pixels), (100_000, 100_000, 10_000_000_000));
            assert_eq!(max_pixels, MAX_PIXELS);
        }
    }

    #[test]
    fn decoder_limits_refuse_a_bomb_on_their_own() {
        let png = bomb_png(100_000, 100_000);
        let err = reader(&png, MAX_PIXELS).decode().unwrap_err();
        assert!(matches!(err, image::ImageError::Limits(_)), "{err:?}");
    }

    #[test]
    fn real_image_over_max_pixels_is_refused() {
        let err = fit_png(&tiny_png(), CAP, 11).unwrap_err();
        assert!(
            matches!(err, ImageError::TooManyPixels { pixels: 12, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn next_size_keeps_the_short_side_at_least_min_side() {
        assert_eq!(next_size(2000, 1500, 0.5, (2000, 1500)), Some((1000, 750)));
        assert_eq!(next_size(2000, 1500, 0.001, (2000, 1500)), Some((21, 16)));
        assert_eq!(next_size(2000, 1500, 0.001, (21, 16)), None);
        assert_eq!(next_size(10, 5, 0.5, (10, 5)), None);
    }
}
