//! PyTorch checkpoints written by `torch.save(state_dict)` (zip format, torch ≥ 1.6), read in Rust
//! without Python: a pickle VM for the subset torch emits, with an allow-list of globals
//! (OrderedDict, the tensor/parameter rebuild functions, the typed storages). Nothing in the file
//! is ever executed; anything outside the allow-list is an error if a tensor depends on it.
//! Nested dicts are flattened with '.' (e.g. {"model": {...}} or {"state_dict": {...}} wrappers).

use crate::models::weights::Weights;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PtDtype {
    F32,
    F16,
    BF16,
    F64,
}

impl PtDtype {
    fn from_storage(name: &str) -> Option<Self> {
        match name {
            "FloatStorage" => Some(PtDtype::F32),
            "HalfStorage" => Some(PtDtype::F16),
            "BFloat16Storage" => Some(PtDtype::BF16),
            "DoubleStorage" => Some(PtDtype::F64),
            _ => None,
        }
    }
    fn size(self) -> usize {
        match self {
            PtDtype::F32 => 4,
            PtDtype::F16 | PtDtype::BF16 => 2,
            PtDtype::F64 => 8,
        }
    }
}

#[derive(Clone, Debug)]
struct TensorRef {
    dtype: PtDtype,
    key: String,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// Containers nested deeper than this are refused: torch.save's state dicts nest a few levels, and
/// a bound keeps every recursive walk (clone, drop, flatten) far from the stack's end.
const MAX_DEPTH: u32 = 1000;
/// Bytes of objects that memo puts and gets may copy, beyond 16 per byte of pickle: re-using the
/// memo doubles a value at each level, so 641 bytes could otherwise ask for gigabytes.
const MEMO_COPY_BUDGET: u64 = 256 << 20;
/// Values the VM's stack may hold at once: torch.save pushes items in batches of 1000, and each
/// value takes ~100 bytes, so a long run of one-byte opcodes cannot amplify into gigabytes.
const MAX_STACK: usize = 1 << 20;

/// Nesting depth and approximate size in bytes of a container, kept up to date as it is built
/// so the limits are checked in constant time.
#[derive(Clone, Copy, Debug, Default)]
struct Meta {
    depth: u32,
    cost: u64,
}

#[derive(Clone, Debug)]
#[allow(dead_code)] // values kept for completeness of the VM, not all read
enum Val {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Val>, Meta),
    List(Vec<Val>, Meta),
    Dict(Vec<(Val, Val)>, Meta),
    Global(String, String),
    Storage(Option<PtDtype>, String, String),
    Tensor(TensorRef),
    /// something outside the allow-list (kept only to report it)
    Opaque(String),
    Mark,
}

const BASE_COST: u64 = std::mem::size_of::<Val>() as u64;

impl Val {
    fn depth(&self) -> u32 {
        match self {
            Val::Tuple(_, m) | Val::List(_, m) | Val::Dict(_, m) => m.depth,
            _ => 0,
        }
    }
    fn cost(&self) -> u64 {
        BASE_COST
            + match self {
                Val::Tuple(_, m) | Val::List(_, m) | Val::Dict(_, m) => m.cost,
                Val::Str(s) | Val::Opaque(s) => s.len() as u64,
                Val::Global(a, b) => (a.len() + b.len()) as u64,
                Val::Storage(_, a, b) => (a.len() + b.len()) as u64,
                Val::Tensor(t) => (t.key.len() + 8 * (t.shape.len() + t.stride.len())) as u64,
                _ => 0,
            }
    }
}

/// The metadata of a container holding `items`, refused when it nests too deep.
fn meta_of<'a>(path: &Path, items: impl Iterator<Item = &'a Val>) -> Result<Meta> {
    let mut m = Meta::default();
    for v in items {
        grow(path, &mut m, v)?;
    }
    Ok(m)
}

/// Accounts for `v` going into a container with metadata `m`.
fn grow(path: &Path, m: &mut Meta, v: &Val) -> Result<()> {
    m.depth = m.depth.max(v.depth() + 1);
    m.cost = m.cost.saturating_add(v.cost());
    if m.depth > MAX_DEPTH {
        return Err(pbad(path, format!("objects nested more than {MAX_DEPTH} levels deep (a state_dict nests a few)")));
    }
    Ok(())
}

fn tuple(path: &Path, items: Vec<Val>) -> Result<Val> {
    let m = meta_of(path, items.iter())?;
    Ok(Val::Tuple(items, m))
}

fn pbad(path: &Path, m: impl Into<String>) -> Error {
    Error::BadFile { path: path.to_path_buf(), msg: format!("pickle: {}", m.into()) }
}

fn as_usizes(v: &Val) -> Option<Vec<usize>> {
    match v {
        Val::Tuple(t, _) | Val::List(t, _) => t.iter().map(|x| if let Val::Int(i) = x { usize::try_from(*i).ok() } else { None }).collect(),
        _ => None,
    }
}

/// Runs the pickle program and returns its result.
fn unpickle(path: &Path, d: &[u8]) -> Result<Val> {
    let mut stack: Vec<Val> = Vec::new();
    let mut memo: BTreeMap<u64, Val> = BTreeMap::new();
    let mut i = 0usize;
    let mut copy_budget = MEMO_COPY_BUDGET.saturating_add(16 * d.len() as u64);
    // a memo put or get copies its value: charge the copy against the budget first
    let mut charge = |v: &Val| -> Result<()> {
        copy_budget = copy_budget
            .checked_sub(v.cost())
            .ok_or_else(|| pbad(path, format!("the memo is re-used to build more than {} MiB of objects (a pickle bomb?)", (MEMO_COPY_BUDGET + 16 * d.len() as u64) >> 20)))?;
        Ok(())
    };
    let take = |i: &mut usize, n: usize| -> Result<&[u8]> {
        let s = i.checked_add(n).and_then(|end| d.get(*i..end)).ok_or_else(|| pbad(path, "truncated"))?;
        *i += n;
        Ok(s)
    };
    let pop = |s: &mut Vec<Val>| s.pop().ok_or_else(|| pbad(path, "stack underflow"));
    let pop_mark = |s: &mut Vec<Val>| -> Result<Vec<Val>> {
        let m = s.iter().rposition(|v| matches!(v, Val::Mark)).ok_or_else(|| pbad(path, "no mark"))?;
        let items = s.split_off(m + 1);
        s.pop();
        Ok(items)
    };
    loop {
        if stack.len() > MAX_STACK {
            return Err(pbad(path, format!("more than {MAX_STACK} values on the stack at once (torch.save pushes at most a few thousand)")));
        }
        let op = *d.get(i).ok_or_else(|| pbad(path, "no STOP"))?;
        i += 1;
        match op {
            0x80 => {
                take(&mut i, 1)?;
            } // PROTO
            0x95 => {
                take(&mut i, 8)?;
            } // FRAME
            b'.' => return pop(&mut stack), // STOP
            b'(' => stack.push(Val::Mark),
            b')' => stack.push(Val::Tuple(vec![], Meta::default())),
            b'}' => stack.push(Val::Dict(vec![], Meta::default())),
            b']' => stack.push(Val::List(vec![], Meta::default())),
            b'N' => stack.push(Val::None),
            0x88 => stack.push(Val::Bool(true)),
            0x89 => stack.push(Val::Bool(false)),
            b'J' => {
                let b = take(&mut i, 4)?;
                stack.push(Val::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64))
            }
            b'K' => {
                let b = take(&mut i, 1)?;
                stack.push(Val::Int(b[0] as i64))
            }
            b'M' => {
                let b = take(&mut i, 2)?;
                stack.push(Val::Int(u16::from_le_bytes([b[0], b[1]]) as i64))
            }
            0x8a => {
                // LONG1
                let n = take(&mut i, 1)?[0] as usize;
                let b = take(&mut i, n)?;
                let mut v: i64 = 0;
                for (k, &byte) in b.iter().enumerate().take(8) {
                    v |= (byte as i64) << (8 * k);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Val::Int(v))
            }
            b'G' => {
                let b = take(&mut i, 8)?;
                stack.push(Val::Float(f64::from_be_bytes(b.try_into().expect("8 bytes"))))
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => u32::from_le_bytes(take(&mut i, 4)?.try_into().expect("4")) as usize,
                    0x8c => take(&mut i, 1)?[0] as usize,
                    _ => u64::from_le_bytes(take(&mut i, 8)?.try_into().expect("8")) as usize,
                };
                let s = String::from_utf8_lossy(take(&mut i, n)?).into_owned();
                stack.push(Val::Str(s))
            }
            b'B' | b'C' => {
                let n = if op == b'B' { u32::from_le_bytes(take(&mut i, 4)?.try_into().expect("4")) as usize } else { take(&mut i, 1)?[0] as usize };
                take(&mut i, n)?;
                stack.push(Val::Opaque("bytes".into()))
            }
            b'c' => {
                let rest = &d[i..];
                let nl1 = rest.iter().position(|&c| c == b'\n').ok_or_else(|| pbad(path, "bad GLOBAL"))?;
                let nl2 = rest[nl1 + 1..].iter().position(|&c| c == b'\n').ok_or_else(|| pbad(path, "bad GLOBAL"))?;
                let module = String::from_utf8_lossy(&rest[..nl1]).into_owned();
                let name = String::from_utf8_lossy(&rest[nl1 + 1..nl1 + 1 + nl2]).into_owned();
                i += nl1 + nl2 + 2;
                stack.push(Val::Global(module, name))
            }
            0x93 => {
                // STACK_GLOBAL
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Val::Str(m), Val::Str(n)) => stack.push(Val::Global(m, n)),
                    _ => return Err(pbad(path, "STACK_GLOBAL on non-strings")),
                }
            }
            b'q' | b'r' | 0x94 => {
                // BINPUT / LONG_BINPUT / MEMOIZE
                let k = match op {
                    b'q' => take(&mut i, 1)?[0] as u64,
                    b'r' => u32::from_le_bytes(take(&mut i, 4)?.try_into().expect("4")) as u64,
                    _ => memo.len() as u64,
                };
                let top = stack.last().ok_or_else(|| pbad(path, "memo of empty stack"))?;
                charge(top)?;
                memo.insert(k, top.clone());
            }
            b'h' | b'j' => {
                // BINGET / LONG_BINGET
                let k = if op == b'h' { take(&mut i, 1)?[0] as u64 } else { u32::from_le_bytes(take(&mut i, 4)?.try_into().expect("4")) as u64 };
                let v = memo.get(&k).ok_or_else(|| pbad(path, format!("memo {k} unset")))?;
                charge(v)?;
                stack.push(v.clone())
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(tuple(path, items)?)
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(pbad(path, "stack underflow"));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(tuple(path, items)?)
            }
            b'a' => {
                let v = pop(&mut stack)?;
                if let Some(Val::List(l, m)) = stack.last_mut() {
                    grow(path, m, &v)?;
                    l.push(v)
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                if let Some(Val::List(l, m)) = stack.last_mut() {
                    for v in &items {
                        grow(path, m, v)?;
                    }
                    l.extend(items)
                }
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                if let Some(Val::Dict(d, m)) = stack.last_mut() {
                    grow(path, m, &k)?;
                    grow(path, m, &v)?;
                    d.push((k, v))
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                if let Some(Val::Dict(d, m)) = stack.last_mut() {
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        grow(path, m, &k)?;
                        grow(path, m, &v)?;
                        d.push((k, v));
                    }
                }
            }
            b'b' => {
                // BUILD: state for the object below (e.g. a state_dict's _metadata): ignored
                pop(&mut stack)?;
            }
            b'Q' => {
                // BINPERSID: ('storage', <storage class>, key, location, numel)
                let pid = pop(&mut stack)?;
                let Val::Tuple(t, _) = pid else { return Err(pbad(path, "persistent id is not a tuple")) };
                match (t.first(), t.get(1), t.get(2), t.get(3)) {
                    (Some(Val::Str(kind)), Some(Val::Global(_, cls)), Some(Val::Str(key)), Some(loc)) if kind == "storage" => {
                        let loc = if let Val::Str(s) = loc { s.clone() } else { String::new() };
                        stack.push(Val::Storage(PtDtype::from_storage(cls), key.clone(), if PtDtype::from_storage(cls).is_none() { cls.clone() } else { loc }))
                    }
                    _ => return Err(pbad(path, "unsupported persistent id")),
                }
            }
            b'R' | 0x81 => {
                // REDUCE / NEWOBJ: callable(*args)
                let args = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                let Val::Tuple(args, _) = args else { return Err(pbad(path, "call arguments are not a tuple")) };
                stack.push(call(path, f, args)?)
            }
            other => return Err(pbad(path, format!("opcode 0x{other:02x} is not in the subset torch.save writes"))),
        }
    }
}

fn call(path: &Path, f: Val, args: Vec<Val>) -> Result<Val> {
    let Val::Global(m, n) = &f else { return Ok(Val::Opaque("call of a non-global".into())) };
    Ok(match (m.as_str(), n.as_str()) {
        ("collections", "OrderedDict") | ("builtins", "dict") => Val::Dict(vec![], Meta::default()),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            let (Some(Val::Storage(dt, key, extra)), Some(Val::Int(off)), Some(size), Some(stride)) = (args.first(), args.get(1), args.get(2), args.get(3)) else {
                return Err(pbad(path, "unexpected _rebuild_tensor_v2 arguments"));
            };
            // Integer tensors (BatchNorm's num_batches_tracked, ...) are not weights: skipped.
            let Some(dtype) = *dt else { return Ok(Val::Opaque(format!("tensor of {extra}"))) };
            let offset = usize::try_from(*off).map_err(|_| pbad(path, format!("tensor storage offset {off} is negative")))?;
            let shape = as_usizes(size).ok_or_else(|| pbad(path, "tensor size is not a tuple of ints"))?;
            let stride = as_usizes(stride).ok_or_else(|| pbad(path, "tensor stride is not a tuple of ints"))?;
            Val::Tensor(TensorRef { dtype, key: key.clone(), offset, shape, stride })
        }
        ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => args.into_iter().next().unwrap_or(Val::None),
        _ => Val::Opaque(format!("{m}.{n}")),
    })
}

/// A torch.save'd state_dict, memory-mapped.
pub struct PtFile {
    path: PathBuf,
    map: memmap2::Mmap,
    entries: BTreeMap<String, std::ops::Range<usize>>,
    prefix: String,
    tensors: BTreeMap<String, TensorRef>,
}

fn flatten(prefix: &str, v: &Val, out: &mut BTreeMap<String, TensorRef>, skipped: &mut Vec<String>) {
    match v {
        Val::Dict(items, _) => {
            for (k, val) in items {
                let key = match k {
                    Val::Str(s) => s.clone(),
                    Val::Int(i) => i.to_string(),
                    _ => continue,
                };
                let full = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
                flatten(&full, val, out, skipped);
            }
        }
        Val::Tensor(t) => {
            out.insert(prefix.to_string(), t.clone());
        }
        Val::Opaque(what) => skipped.push(format!("{prefix} ({what})")),
        _ => {}
    }
}

impl PtFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = super::files::open_regular(path)?;
        // SAFETY: read-only map of a regular file.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::Io { path: path.to_path_buf(), source: e })?;
        let kind = super::sniff::sniff(&map[..map.len().min(16)]);
        if kind != super::sniff::Kind::Zip {
            let why = super::sniff::wrong_kind(kind, "a PyTorch zip checkpoint").unwrap_or_else(|| "not a PyTorch zip checkpoint (torch.save with the default zip format)".into());
            return Err(Error::BadFile { path: path.to_path_buf(), msg: why });
        }
        let entries = super::zip::entries(path, &map)?;
        let pkl = entries
            .keys()
            .find(|k| k.ends_with("/data.pkl") || k.as_str() == "data.pkl")
            .cloned()
            .ok_or_else(|| Error::BadFile { path: path.to_path_buf(), msg: "no data.pkl in the archive".into() })?;
        let prefix = pkl.strip_suffix("data.pkl").unwrap_or("").to_string();
        let root = unpickle(path, &map[entries[&pkl].clone()])?;
        let mut tensors = BTreeMap::new();
        let mut skipped = Vec::new();
        flatten("", &root, &mut tensors, &mut skipped);
        if tensors.is_empty() {
            return Err(Error::BadFile {
                path: path.to_path_buf(),
                msg: format!("no tensors found (a state_dict was expected){}", if skipped.is_empty() { String::new() } else { format!("; unsupported objects: {}", skipped.join(", ")) }),
            });
        }
        Ok(PtFile { path: path.to_path_buf(), map, entries, prefix, tensors })
    }
}

impl Weights for PtFile {
    fn path(&self) -> &Path {
        &self.path
    }
    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    fn shape(&self, name: &str) -> Result<Vec<usize>> {
        self.tensors.get(name).map(|t| t.shape.clone()).ok_or_else(|| Error::MissingTensor { path: self.path.clone(), name: name.into() })
    }
    fn get(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self.tensors.get(name).ok_or_else(|| Error::MissingTensor { path: self.path.clone(), name: name.into() })?;
        let tbad = |m: String| Error::BadTensor { path: self.path.clone(), name: name.into(), msg: m };
        let entry = format!("{}data/{}", self.prefix, t.key);
        let range = self.entries.get(&entry).ok_or_else(|| tbad(format!("storage {entry} is missing from the archive")))?;
        let raw = &self.map[range.clone()];
        let es = t.dtype.size();
        if t.stride.len() != t.shape.len() {
            return Err(tbad("stride and size ranks differ".into()));
        }
        // Everything is checked against the storage before a value is allocated: sizes that
        // overflow, views past the storage's end, and views with more elements than their
        // storage (stride 0 or overlapping strides: a [2^40] tensor of one stored value).
        let numel = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| tbad(format!("shape {:?} has more elements than memory can address", t.shape)))?;
        if numel == 0 {
            return Ok((t.shape.clone(), Vec::new()));
        }
        let stored = raw.len() / es;
        let last = t.shape.iter().zip(&t.stride).try_fold(t.offset, |a, (&s, &st)| (s - 1).checked_mul(st).and_then(|x| a.checked_add(x)));
        match last {
            Some(last) if last < stored => {}
            _ => {
                return Err(tbad(format!(
                    "storage offset {} with size {:?} and stride {:?} reaches past its storage of {stored} elements ({} bytes; truncated?)",
                    t.offset,
                    t.shape,
                    t.stride,
                    raw.len()
                )))
            }
        }
        if numel > stored {
            return Err(tbad(format!(
                "size {:?} with stride {:?} views {numel} elements of a storage of {stored}: overlapping or expanded views are not weights (save a .contiguous() copy)",
                t.shape, t.stride
            )));
        }
        let read = |e: usize| -> f32 {
            let b = &raw[e * es..e * es + es];
            match t.dtype {
                PtDtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                PtDtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                PtDtype::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                PtDtype::F64 => f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32,
            }
        };
        let mut vals = Vec::with_capacity(numel);
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            // in range: bounded by `last` above
            let e = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            vals.push(read(e));
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        if let Some(i) = vals.iter().position(|v| !v.is_finite()) {
            return Err(tbad(format!("value #{i} is {} (weights must be finite)", vals[i])));
        }
        Ok((t.shape.clone(), vals))
    }
}
