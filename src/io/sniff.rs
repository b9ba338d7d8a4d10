//! What a weight file is, by its first bytes, so that a file of the wrong kind is named as what
//! it is (a legacy .pt, an empty zip) rather than as a bad header of the kind expected.

/// torch.save's legacy (pre-1.6, non-zip) format begins with a protocol-2 pickle of this number.
const LEGACY_TORCH_MAGIC: [u8; 14] = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// a zip archive with entries (torch.save's default format since 1.6)
    Zip,
    /// a zip archive with no entries at all
    EmptyZip,
    /// torch.save(..., _use_new_zipfile_serialization=False) or torch < 1.6
    LegacyTorch,
    /// some other Python pickle
    Pickle,
    /// anything else (safetensors has no magic: its first 8 bytes are a header length)
    Other,
}

pub fn sniff(head: &[u8]) -> Kind {
    if head.starts_with(b"PK\x03\x04") {
        Kind::Zip
    } else if head.starts_with(b"PK\x05\x06") {
        Kind::EmptyZip
    } else if head.starts_with(&LEGACY_TORCH_MAGIC) {
        Kind::LegacyTorch
    } else if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        Kind::Pickle
    } else {
        Kind::Other
    }
}

/// Why a file of this kind cannot be read as `wanted`, or None when it may be.
pub fn wrong_kind(kind: Kind, wanted: &str) -> Option<String> {
    match kind {
        Kind::Zip => None,
        Kind::EmptyZip => Some(format!("an empty zip archive (no entries), not {wanted}")),
        Kind::LegacyTorch => Some(format!("a legacy (non-zip) PyTorch checkpoint, not {wanted}: re-save it with torch.save(obj, path) from torch >= 1.6 (the zip format), then use it")),
        Kind::Pickle => Some(format!("a bare Python pickle, not {wanted} (pickles are never run; a torch.save zip checkpoint is read)")),
        Kind::Other => None,
    }
}
