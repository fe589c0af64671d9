//! NumPy `.npy` matrices: what `trainer embed` writes latents as, and what `trainer import` reads
//! centroid tables from. Version 1.0 headers out; 1.0-3.0 headers, f4 or f8, in. Written here
//! rather than with a crate because two-dimensional float arrays in C order are all either side
//! needs, in about sixty lines.

/// Writes a float matrix as NumPy `.npy` (version 1.0, little-endian f32, C order).
pub fn matrix_bytes(data: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + header length (2) + header + '\n' must be a multiple of 64.
    let pad = 64 - (10 + header.len() + 1) % 64;
    header.push_str(&" ".repeat(pad % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// A 2-D little-endian f4/f8 `.npy` array in C order: values, rows, columns.
pub fn read_matrix(b: &[u8]) -> std::result::Result<(Vec<f32>, usize, usize), String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy file".into());
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!(".npy version {v} is not supported")),
    };
    let header = b.get(start..start + hlen).ok_or(".npy header is truncated")?;
    let header = String::from_utf8_lossy(header);
    let width = if header.contains("'<f4'") {
        4
    } else if header.contains("'<f8'") {
        8
    } else {
        return Err(format!("expected little-endian float32 or float64 values, header {header}"));
    };
    if header.contains("'fortran_order': True") {
        return Err("Fortran-order arrays are not supported (save with np.ascontiguousarray)".into());
    }
    let shape = header.split("'shape':").nth(1).and_then(|s| s.split(')').next()).ok_or("no shape in the .npy header")?;
    let dims: Vec<usize> = shape
        .trim_start_matches([' ', '('])
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| format!("bad shape {shape})"))?;
    let [rows, cols] = dims[..] else { return Err(format!("expected a 2-D array (k, latent), found shape {dims:?}")) };
    let data = &b[start + hlen..];
    if data.len() != rows * cols * width {
        return Err(format!("{} data bytes for shape ({rows}, {cols}) of {width}-byte values", data.len()));
    }
    let vals = if width == 4 {
        data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    } else {
        data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32).collect()
    };
    Ok((vals, rows, cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What we write reads back to the same values and shape, with the header padded as NumPy
    /// requires; f8 input and a cut-short file are handled.
    #[test]
    fn a_written_matrix_reads_back() {
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
        let bytes = matrix_bytes(&data, 3, 4);
        assert_eq!((10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64, 0);
        assert_eq!(read_matrix(&bytes).unwrap(), (data.clone(), 3, 4));
        let mut wide = bytes[..bytes.len() - 48].to_vec();
        let at = wide.windows(3).position(|w| w == b"<f4").unwrap();
        wide[at + 2] = b'8';
        data.iter().for_each(|v| wide.extend_from_slice(&(*v as f64).to_le_bytes()));
        assert_eq!(read_matrix(&wide).unwrap(), (data, 3, 4));
        assert!(read_matrix(&bytes[..bytes.len() - 1]).unwrap_err().contains("data bytes"));
        assert_eq!(read_matrix(b"not numpy").unwrap_err(), "not a .npy file");
    }
}
