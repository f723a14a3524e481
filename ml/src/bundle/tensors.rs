//! `weights.safetensors`: a bundle's parameters as named tensors in the
//! [safetensors](https://huggingface.co/docs/safetensors) format, which PyTorch, JAX and the
//! `safetensors` packages read.
//!
//! Each float parameter of the model is one `F32` tensor named by its dotted module path
//! (`layers.0.weight`, `embeddings.1.weight`, …). The header's metadata has one key, `millrace`,
//! whose value (a JSON object, as the format wants strings) holds what turns the tensors back
//! into millrace's flat vector without the model's code: `order` (the names in flat order),
//! `fnv1a64` (an FNV-1a 64 checksum of the values in that order, in hex) and `kind`. One key keeps
//! the file byte-for-byte reproducible: the same weights always give the same file.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::weights::fnv1a64;
use crate::error::{Error, Result};
use crate::model::params::ParamShape;

const META: &str = "millrace";

/// The `millrace` metadata entry.
#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    kind: String,
    order: Vec<String>,
    fnv1a64: String,
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Encodes the flat `weights` of a model of `kind` whose parameters are `shapes` (flat order).
pub fn encode(kind: &str, shapes: &[ParamShape], weights: &[f32]) -> Result<Vec<u8>> {
    let total: usize = shapes.iter().map(ParamShape::numel).sum();
    if total != weights.len() {
        return Err(Error::Internal(format!(
            "{} weights for parameters of {total} values",
            weights.len()
        )));
    }
    let mut bytes = Vec::with_capacity(shapes.len());
    let mut rest = weights;
    for shape in shapes {
        let (values, tail) = rest.split_at(shape.numel());
        rest = tail;
        bytes.push(le_bytes(values));
    }
    let views = shapes
        .iter()
        .zip(&bytes)
        .map(|(shape, data)| {
            TensorView::new(Dtype::F32, shape.shape.clone(), data)
                .map(|view| (shape.path.clone(), view))
                .map_err(|e| Error::Internal(format!("safetensors view of {}: {e}", shape.path)))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = Meta {
        kind: kind.to_owned(),
        order: shapes.iter().map(|s| s.path.clone()).collect(),
        fnv1a64: format!("{:016x}", fnv1a64(&le_bytes(weights))),
    };
    let metadata = HashMap::from([(
        META.to_owned(),
        serde_json::to_string(&meta).map_err(|e| Error::Internal(e.to_string()))?,
    )]);
    safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| Error::Internal(format!("writing safetensors: {e}")))
}

/// Decodes a `weights.safetensors` file into the flat vector and the parameters' shapes (in
/// flat order); `path` is only used in messages.
pub fn decode(bytes: &[u8], path: &Path) -> Result<(Vec<f32>, Vec<ParamShape>)> {
    let bad = |message: String| Error::Bundle {
        path: path.to_path_buf(),
        message,
    };
    let (_, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let tensors =
        SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let entries = metadata.metadata().clone().unwrap_or_default();
    let meta: Meta = entries
        .get(META)
        .ok_or_else(|| {
            bad(format!(
                "the header has no `{META}` entry: not written by millrace"
            ))
        })
        .and_then(|m| {
            serde_json::from_str(m).map_err(|e| bad(format!("the `{META}` entry: {e}")))
        })?;
    let order = meta.order;
    if order.len() != tensors.len() {
        return Err(bad(format!(
            "`{META}.order` names {} tensors but the file holds {}",
            order.len(),
            tensors.len()
        )));
    }
    let mut weights = Vec::new();
    let mut shapes = Vec::with_capacity(order.len());
    for name in order {
        let view = tensors
            .tensor(&name)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor `{name}` is {:?}; millrace reads F32",
                view.dtype()
            )));
        }
        weights.extend(
            view.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        shapes.push(ParamShape {
            path: name,
            shape: view.shape().to_vec(),
        });
    }
    let want = meta.fnv1a64;
    let got = format!("{:016x}", fnv1a64(&le_bytes(&weights)));
    if want != got {
        return Err(bad(format!(
            "checksum mismatch: the header says {want}, the values hash to {got} (the file is corrupt)"
        )));
    }
    Ok((weights, shapes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_flat_order_and_catches_corruption() {
        let shapes = vec![
            ParamShape {
                path: "z.weight".into(),
                shape: vec![2, 3],
            },
            ParamShape {
                path: "a.bias".into(),
                shape: vec![3],
            },
        ];
        let weights: Vec<f32> = (0..9).map(|i| i as f32 * 0.5 - 1.0).collect();
        let bytes = encode("mlp", &shapes, &weights).unwrap();
        // Reproducible: the same weights, the same bytes.
        assert_eq!(encode("mlp", &shapes, &weights).unwrap(), bytes);
        let (back, back_shapes) = decode(&bytes, Path::new("w")).unwrap();
        assert_eq!(back, weights);
        assert_eq!(back_shapes, shapes);
        // Readable as plain safetensors, by name.
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let bias = st.tensor("a.bias").unwrap();
        assert_eq!(bias.shape(), &[3]);
        assert_eq!(&bias.data()[..4], &weights[6].to_le_bytes());
        // Flip one value byte: the checksum catches it.
        let mut corrupt = bytes.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0x40;
        let err = decode(&corrupt, Path::new("m/weights.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(encode("mlp", &shapes, &weights[1..]).is_err());
    }
}
