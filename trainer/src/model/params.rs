//! Named trainable tensors, their seeded initialisation, and safetensors storage.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// All trainable tensors of a model, by PyTorch-style name (`encoder.weight_ih_l0`, ...).
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    vars: BTreeMap<String, Var>,
}

impl ParamStore {
    /// Adds a tensor drawn from `U(-bound, bound)` with our seeded RNG (candle's own CPU RNG
    /// cannot be seeded, which would make runs irreproducible).
    pub fn uniform(&mut self, name: &str, shape: &[usize], bound: f64, rng: &mut ChaCha8Rng, dev: &Device) -> Result<()> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.gen_range(-bound..=bound) as f32).collect();
        let t = Tensor::from_vec(data, shape, dev)?;
        self.vars.insert(name.to_string(), Var::from_tensor(&t)?);
        Ok(())
    }

    /// Xavier/Glorot uniform for a `[fan_out, fan_in]` weight: bound `sqrt(6 / (fan_in + fan_out))`.
    pub fn xavier(&mut self, name: &str, fan_out: usize, fan_in: usize, rng: &mut ChaCha8Rng, dev: &Device) -> Result<()> {
        let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
        self.uniform(name, &[fan_out, fan_in], bound, rng, dev)
    }

    /// The tensor called `name`, checked to have `shape`; `origin` names the file in errors.
    pub fn get(&self, name: &str, shape: &[usize], origin: &Path) -> Result<Tensor> {
        let v = self.vars.get(name).ok_or_else(|| Error::model(origin, format!("weights lack tensor '{name}'")))?;
        if v.dims() != shape {
            return Err(Error::model(origin, format!("tensor '{name}' has shape {:?}, the config implies {shape:?}", v.dims())));
        }
        Ok(v.as_tensor().clone())
    }

    /// Every variable, for the optimiser.
    pub fn vars(&self) -> Vec<Var> {
        self.vars.values().cloned().collect()
    }

    /// Named variables.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Var)> {
        self.vars.iter()
    }

    /// Number of scalar parameters.
    pub fn numel(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }

    /// Serialises all tensors in safetensors format.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let tensors = self.vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
        tensors_to_safetensors(&tensors, None)
    }

    /// Reads a safetensors file written by [`ParamStore::to_safetensors`].
    pub fn from_safetensors(bytes: &[u8], origin: &Path, dev: &Device) -> Result<Self> {
        let (tensors, _) = tensors_from_safetensors(bytes, origin, dev)?;
        Self::from_tensors(tensors)
    }

    /// Trainable variables made from plain tensors.
    pub fn from_tensors(tensors: BTreeMap<String, Tensor>) -> Result<Self> {
        let vars = tensors.into_iter().map(|(k, t)| Ok((k, Var::from_tensor(&t)?))).collect::<Result<_>>()?;
        Ok(ParamStore { vars })
    }

    /// A copy with every tensor converted to `dtype` (f64 for finite-difference checks).
    pub fn to_dtype(&self, dtype: DType) -> Result<ParamStore> {
        let vars =
            self.vars.iter().map(|(k, v)| Ok((k.clone(), Var::from_tensor(&v.as_tensor().to_dtype(dtype)?)?))).collect::<Result<_>>()?;
        Ok(ParamStore { vars })
    }

    /// Plain tensors by name (for tests and exporters).
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        self.vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect()
    }
}

/// Serialises named f32 tensors (and optional string metadata) in safetensors format.
pub fn tensors_to_safetensors(tensors: &BTreeMap<String, Tensor>, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let mut data = Vec::with_capacity(tensors.len());
    for (k, t) in tensors {
        let t = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        let bytes: Vec<u8> = t.flatten_all()?.to_vec1::<f32>()?.iter().flat_map(|x| x.to_le_bytes()).collect();
        data.push((k.clone(), t.dims().to_vec(), bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(k, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map_err(|e| Error::Training(format!("safetensors view of '{k}': {e}")))?;
            Ok((k.clone(), view))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, metadata).map_err(|e| Error::Training(format!("safetensors: {e}")))
}

/// Named tensors and the string metadata of a safetensors file.
pub type NamedTensors = (BTreeMap<String, Tensor>, Option<HashMap<String, String>>);

/// Reads named f32 tensors and the metadata of a safetensors file; non-finite values are an error.
pub fn tensors_from_safetensors(bytes: &[u8], origin: &Path, dev: &Device) -> Result<NamedTensors> {
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| Error::model(origin, format!("not a valid safetensors file: {e}")))?;
    let st =
        safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::model(origin, format!("not a valid safetensors file: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(Error::model(origin, format!("tensor '{name}' is {:?}, expected F32", view.dtype())));
        }
        let vals: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if let Some(i) = vals.iter().position(|v| !v.is_finite()) {
            return Err(Error::model(origin, format!("tensor '{name}' holds a non-finite value at index {i}")));
        }
        out.insert(name, Tensor::from_vec(vals, view.shape(), dev)?);
    }
    Ok((out, meta.metadata().clone()))
}
