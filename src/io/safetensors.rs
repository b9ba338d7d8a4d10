//! safetensors files, memory-mapped. Our own small reader (the format is an 8-byte header length,
//! a JSON header, then raw little-endian data) so that every failure names the file, the tensor
//! and the problem: truncated data, bad header, unknown dtype, wrong shape, NaN/Inf values.
//! f32, f16, bf16 and f64 are converted to f32 on load.

use crate::backend::Backend;
use crate::tensor::Tensor;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Headers larger than this are refused (the format's own readers use the same order of limit).
const MAX_HEADER: u64 = 100 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    F64,
    /// integer tensors (timesteps, labels in reference files), read as f32
    I64,
    I32,
    U8,
}

impl Dtype {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "F32" => Some(Dtype::F32),
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::BF16),
            "F64" => Some(Dtype::F64),
            "I64" => Some(Dtype::I64),
            "I32" => Some(Dtype::I32),
            "U8" => Some(Dtype::U8),
            _ => None,
        }
    }
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::I32 => 4,
            Dtype::U8 => 1,
        }
    }
    pub fn parse_name(s: &str) -> Option<Self> {
        match s {
            "f32" | "F32" => Some(Dtype::F32),
            "f16" | "F16" => Some(Dtype::F16),
            "bf16" | "BF16" => Some(Dtype::BF16),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::U8 => "U8",
        }
    }
}

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    begin: usize,
    end: usize,
}

pub struct SafeTensors {
    path: PathBuf,
    map: memmap2::Mmap,
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::BadFile { path: path.to_path_buf(), msg: msg.into() }
}

impl SafeTensors {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = super::files::open_regular(path)?;
        let len = file.metadata().map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?.len();
        // SAFETY: read-only map of a regular file; we never hand out references that outlive it.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        // safetensors has no magic: when its header does not parse, say what the file is instead
        // if its first bytes tell (a .pt zip, an empty zip, a legacy .pt, a pickle)
        let other_kind = |plain: String| -> Error {
            let kind = super::sniff::sniff(&map[..map.len().min(16)]);
            let why = match kind {
                super::sniff::Kind::Zip => Some("a zip archive (a PyTorch checkpoint?), not a safetensors file: `ran convert` it first".to_string()),
                k => super::sniff::wrong_kind(k, "a safetensors file"),
            };
            bad(path, why.unwrap_or(plain))
        };
        if len < 8 || map.len() < 8 {
            return Err(other_kind(format!("not a safetensors file: {len} bytes, shorter than the 8-byte header length")));
        }
        let hlen = u64::from_le_bytes(map[..8].try_into().expect("8 bytes"));
        if hlen > MAX_HEADER || hlen > len - 8 {
            return Err(other_kind(format!("header length {hlen} exceeds the file ({len} bytes): truncated or not a safetensors file")));
        }
        let data_start = 8 + hlen as usize;
        // entries in file order, so that a key given twice is seen (a JSON map keeps one of them)
        let header: HeaderEntries = serde_json::from_slice(&map[8..data_start]).map_err(|e| other_kind(format!("header is not valid JSON (an object of tensor entries expected): {e}")))?;
        let data_len = map.len() - data_start;
        let mut tensors = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        let mut seen_metadata = false;
        for (name, v) in &header.0 {
            if name == "__metadata__" {
                if std::mem::replace(&mut seen_metadata, true) {
                    return Err(bad(path, "__metadata__ is given twice"));
                }
                let m = v.as_object().ok_or_else(|| bad(path, "__metadata__ is not an object"))?;
                for (k, val) in m {
                    let s = val.as_str().ok_or_else(|| bad(path, format!("__metadata__ value `{k}` is not a string")))?;
                    metadata.insert(k.clone(), s.to_string());
                }
                continue;
            }
            let info = parse_entry(path, name, v, data_len)?;
            if tensors.insert(name.clone(), info).is_some() {
                return Err(Error::BadTensor { path: path.to_path_buf(), name: name.clone(), msg: "given twice in the header (keys must be unique)".into() });
            }
        }
        check_disjoint(path, &tensors)?;
        Ok(SafeTensors { path: path.to_path_buf(), map, data_start, tensors, metadata })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(|s| s.as_str())
    }
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor { path: self.path.clone(), name: name.to_string() })
    }

    /// The tensor's shape and its values as f32, rejecting NaN and ±Inf.
    pub fn get(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self.info(name)?;
        let raw = &self.map[self.data_start + info.begin..self.data_start + info.end];
        let vals: Vec<f32> = match info.dtype {
            Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::F64 => raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
            Dtype::I64 => raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
            Dtype::I32 => raw.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32).collect(),
            Dtype::U8 => raw.iter().map(|&b| b as f32).collect(),
        };
        if let Some(i) = vals.iter().position(|v| !v.is_finite()) {
            return Err(Error::BadTensor { path: self.path.clone(), name: name.to_string(), msg: format!("value #{i} is {} (weights must be finite)", vals[i]) });
        }
        Ok((info.shape.clone(), vals))
    }

    /// An F64 tensor at full precision (schedule tables, fixtures); other dtypes widen from f32.
    pub fn get_f64(&self, name: &str) -> Result<(Vec<usize>, Vec<f64>)> {
        let info = self.info(name)?;
        if info.dtype != Dtype::F64 {
            let (s, v) = self.get(name)?;
            return Ok((s, v.into_iter().map(f64::from).collect()));
        }
        let raw = &self.map[self.data_start + info.begin..self.data_start + info.end];
        let vals: Vec<f64> = raw.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
        if let Some(i) = vals.iter().position(|v| !v.is_finite()) {
            return Err(Error::BadTensor { path: self.path.clone(), name: name.to_string(), msg: format!("value #{i} is {}", vals[i]) });
        }
        Ok((info.shape.clone(), vals))
    }

    /// Like `get`, but the shape must be exactly `want`.
    pub fn get_shaped(&self, name: &str, want: &[usize]) -> Result<Vec<f32>> {
        let (shape, v) = self.get(name)?;
        if shape != want {
            return Err(Error::BadTensor { path: self.path.clone(), name: name.to_string(), msg: format!("shape {shape:?}, expected {want:?}") });
        }
        Ok(v)
    }

    /// Loads a tensor onto a backend.
    pub fn load<B: Backend>(&self, backend: &B, name: &str) -> Result<Tensor<B>> {
        let (shape, v) = self.get(name)?;
        backend.from_host(&shape, &v)
    }
}

/// The header's (key, value) pairs in file order, duplicates kept.
struct HeaderEntries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for HeaderEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HeaderEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> std::result::Result<HeaderEntries, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = m.next_entry::<String, serde_json::Value>()? {
                    v.push(e);
                }
                Ok(HeaderEntries(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// No two tensors may share bytes: aliased or overlapping ranges would make one tensor's values
/// silently another's. Empty tensors take no bytes and are exempt.
fn check_disjoint(path: &Path, tensors: &BTreeMap<String, TensorInfo>) -> Result<()> {
    let mut ranges: Vec<(usize, usize, &str)> = tensors.iter().filter(|(_, t)| t.end > t.begin).map(|(n, t)| (t.begin, t.end, n.as_str())).collect();
    ranges.sort();
    for w in ranges.windows(2) {
        let ((b0, e0, n0), (b1, e1, n1)) = (w[0], w[1]);
        if b1 < e0 {
            return Err(Error::BadTensor { path: path.to_path_buf(), name: n1.to_string(), msg: format!("data [{b1}, {e1}) overlaps tensor `{n0}`'s [{b0}, {e0}) (tensors must not share bytes)") });
        }
    }
    Ok(())
}

fn parse_entry(path: &Path, name: &str, v: &serde_json::Value, data_len: usize) -> Result<TensorInfo> {
    let tbad = |msg: String| Error::BadTensor { path: path.to_path_buf(), name: name.to_string(), msg };
    let dtype_s = v.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| tbad("header entry has no dtype".into()))?;
    let dtype = Dtype::parse(dtype_s).ok_or_else(|| tbad(format!("dtype {dtype_s} is not supported (F32, F16, BF16, F64, I64, I32, U8)")))?;
    let shape: Vec<usize> = v
        .get("shape")
        .and_then(|s| s.as_array())
        .and_then(|a| a.iter().map(|d| d.as_u64().map(|x| x as usize)).collect::<Option<Vec<_>>>())
        .ok_or_else(|| tbad("header entry has no valid shape".into()))?;
    let offs: Vec<usize> = v
        .get("data_offsets")
        .and_then(|s| s.as_array())
        .and_then(|a| a.iter().map(|d| d.as_u64().map(|x| x as usize)).collect::<Option<Vec<_>>>())
        .filter(|o| o.len() == 2)
        .ok_or_else(|| tbad("header entry has no valid data_offsets".into()))?;
    let (begin, end) = (offs[0], offs[1]);
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| tbad(format!("shape {shape:?} overflows")))?;
    if begin > end || end - begin != numel.saturating_mul(dtype.size()) {
        return Err(tbad(format!("data_offsets [{begin}, {end}) hold {} bytes, shape {shape:?} of {} needs {}", end.saturating_sub(begin), dtype.name(), numel.saturating_mul(dtype.size()))));
    }
    if end > data_len {
        return Err(tbad(format!("data ends at byte {end} but the file holds only {data_len} data bytes: the file is truncated")));
    }
    Ok(TensorInfo { dtype, shape, begin, end })
}

/// Writes f32 tensors (name, shape, values) and string metadata as one safetensors file.
pub fn write_f32(path: impl AsRef<Path>, tensors: &[(&str, &[usize], &[f32])], metadata: &BTreeMap<String, String>) -> Result<()> {
    let path = path.as_ref();
    crate::io::files::write_bytes_atomic(path, encode_f32(path, tensors, metadata)?)
}

/// The bytes of the safetensors file `write_f32` writes (`path` names it in errors).
pub fn encode_f32(path: &Path, tensors: &[(&str, &[usize], &[f32])], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).map_err(|e| bad(path, e.to_string()))?);
    }
    let mut off = 0usize;
    for (name, shape, vals) in tensors {
        if shape.iter().product::<usize>() != vals.len() {
            return Err(Error::BadTensor { path: path.to_path_buf(), name: name.to_string(), msg: format!("shape {shape:?} does not hold {} values", vals.len()) });
        }
        let end = off + vals.len() * 4;
        header.insert(name.to_string(), serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [off, end]}));
        off = end;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).map_err(|e| bad(path, e.to_string()))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + off);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    for (_, _, vals) in tensors {
        out.extend_from_slice(bytemuck::cast_slice(vals));
    }
    Ok(out)
}

/// Streams tensors into a safetensors file in `dtype` (F32, F16 or BF16): the header is written
/// from the shapes first, then each tensor's values, fetched one at a time, so a large model
/// never sits in memory twice.
pub fn write_streaming(path: impl AsRef<Path>, entries: &[(String, Vec<usize>)], mut fetch: impl FnMut(&str) -> Result<Vec<f32>>, metadata: &BTreeMap<String, String>, dtype: Dtype) -> Result<()> {
    write_streaming_chunks(path, entries, |name, sink| sink(&fetch(name)?), metadata, dtype)
}

/// `write_streaming` where each tensor hands its values to `sink` in as many chunks as it likes
/// (in order), so a tensor larger than memory can be produced piece by piece.
pub fn write_streaming_chunks(
    path: impl AsRef<Path>,
    entries: &[(String, Vec<usize>)],
    mut produce: impl FnMut(&str, &mut dyn FnMut(&[f32]) -> Result<()>) -> Result<()>,
    metadata: &BTreeMap<String, String>,
    dtype: Dtype,
) -> Result<()> {
    use std::io::Write;
    let path = path.as_ref();
    if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
        return Err(Error::InvalidArgument(format!("cannot write weights as {}", dtype.name())));
    }
    let io = |e: std::io::Error| Error::Io { path: path.to_path_buf(), source: e };
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).map_err(|e| bad(path, e.to_string()))?);
    }
    let mut off = 0usize;
    for (name, shape) in entries {
        let end = off + shape.iter().product::<usize>() * dtype.size();
        header.insert(name.clone(), serde_json::json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [off, end]}));
        off = end;
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).map_err(|e| bad(path, e.to_string()))?;
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    crate::io::files::write_atomic(path, |w| {
        w.write_all(&(h.len() as u64).to_le_bytes()).map_err(io)?;
        w.write_all(&h).map_err(io)?;
        for (name, shape) in entries {
            let want = shape.iter().product::<usize>();
            let mut written = 0usize;
            let mut sink = |v: &[f32]| -> Result<()> {
                written += v.len();
                if written > want {
                    return Err(Error::BadTensor { path: path.to_path_buf(), name: name.clone(), msg: format!("more than {want} values for shape {shape:?}") });
                }
                match dtype {
                    Dtype::F32 => w.write_all(bytemuck::cast_slice(v)).map_err(io),
                    Dtype::F16 => w.write_all(&v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect::<Vec<u8>>()).map_err(io),
                    _ => w.write_all(&v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect::<Vec<u8>>()).map_err(io),
                }
            };
            produce(name, &mut sink)?;
            if written != want {
                return Err(Error::BadTensor { path: path.to_path_buf(), name: name.clone(), msg: format!("{written} values for shape {shape:?}") });
            }
        }
        Ok(())
    })
}
