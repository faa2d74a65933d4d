//! Runnable plans specialised per concrete input shape. tract optimises a model far better when
//! every input dimension is known (a symbolic batch made mobilenet ~6× slower here: depthwise
//! convolutions fell back to im2col, ReLU6 was not fused), so a model with symbolic dimensions
//! gets one plan per input shape it is asked to run, kept in a small LRU cache. Each plan holds
//! its own packed weights, which is why the model cache counts a version's memory per plan.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use lru::LruCache;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::ensure;

use super::layout;
use crate::Layout;

pub(super) type Plan = Arc<TypedRunnableModel>;

/// Plans kept per loaded version of a model with symbolic input dimensions. A workload cycling
/// through more shapes than this re-specialises on misses: still correct, slower.
pub const MAX_SHAPE_PLANS: usize = 4;

type Shapes = Vec<TVec<usize>>;

pub(super) struct Plans {
    /// Decluttered, input dimensions possibly symbolic.
    model: TypedModel,
    layout: Layout,
    symbolic: bool,
    cache: Mutex<LruCache<Shapes, Plan>>,
    /// For inputs the specialisation cannot handle: the model optimised as it is.
    generic: OnceLock<Plan>,
    built: AtomicUsize,
}

impl Plans {
    pub(super) fn new(model: TypedModel, layout: Layout) -> TractResult<Self> {
        let symbolic = !inputs_concrete(&model)?;
        Ok(Self {
            model,
            layout,
            symbolic,
            cache: Mutex::new(LruCache::new(MAX_SHAPE_PLANS.try_into().expect("non-zero"))),
            generic: OnceLock::new(),
            built: AtomicUsize::new(0),
        })
    }

    pub(super) fn model(&self) -> &TypedModel {
        &self.model
    }

    pub(super) fn layout(&self) -> Layout {
        self.layout
    }

    /// The plan for inputs of these shapes, built on first use.
    pub(super) fn get(&self, shapes: Shapes) -> TractResult<Plan> {
        // A model without symbolic dimensions has one plan, whatever it is asked to run.
        let key = if self.symbolic { shapes } else { Vec::new() };
        if let Some(plan) = self.cache.lock().expect("plan cache lock").get(&key) {
            return Ok(plan.clone());
        }
        let plan = match specialise(&self.model, &key) {
            Ok(model) => build(model, self.layout)?,
            // Only a model with symbolic dimensions can fail to specialise.
            Err(_) => return self.generic(),
        };
        self.built.fetch_add(1, Ordering::Relaxed);
        self.cache
            .lock()
            .expect("plan cache lock")
            .put(key, plan.clone());
        Ok(plan)
    }

    fn generic(&self) -> TractResult<Plan> {
        if let Some(plan) = self.generic.get() {
            return Ok(plan.clone());
        }
        // The conv_nhwc rewrite wants concrete shapes: the generic plan stays plain.
        let plan = build(self.model.clone(), Layout::Plain)?;
        self.built.fetch_add(1, Ordering::Relaxed);
        Ok(self.generic.get_or_init(|| plan).clone())
    }

    /// Plans in memory.
    pub(super) fn resident(&self) -> usize {
        self.cache.lock().expect("plan cache lock").len()
            + usize::from(self.generic.get().is_some())
    }

    /// Plans built since the model was loaded (counting those evicted).
    pub(super) fn built(&self) -> usize {
        self.built.load(Ordering::Relaxed)
    }
}

/// `model` with its symbolic input dimensions bound to those of `shapes` (unchanged when it has
/// none).
pub(super) fn specialise(model: &TypedModel, shapes: &[TVec<usize>]) -> TractResult<TypedModel> {
    if inputs_concrete(model)? {
        return Ok(model.clone());
    }
    let facts = input_facts(model)?;
    ensure!(
        facts.len() == shapes.len(),
        "{} inputs given, the model has {}",
        shapes.len(),
        facts.len()
    );
    let mut values: HashMap<Symbol, TDim> = HashMap::new();
    for (fact, shape) in facts.iter().zip(shapes) {
        ensure!(
            fact.rank() == shape.len(),
            "rank {} given for {fact:?}",
            shape.len()
        );
        for (dim, &given) in fact.shape.iter().zip(shape) {
            let given = TDim::Val(given as i64);
            match dim {
                TDim::Sym(symbol) => {
                    let bound = values.entry(symbol.clone()).or_insert(given.clone());
                    ensure!(*bound == given, "{symbol} bound to {bound} and {given}");
                }
                TDim::Val(_) => ensure!(*dim == given, "{given} given for {dim}"),
                // An expression (2·N): bound through its symbols by other dimensions, or left
                // to the generic plan.
                _ => {}
            }
        }
    }
    let specialised = model.set_symbols(&values)?;
    ensure!(
        inputs_concrete(&specialised)?,
        "an input dimension stays symbolic"
    );
    Ok(specialised)
}

fn input_facts(model: &TypedModel) -> TractResult<Vec<&TypedFact>> {
    model
        .input_outlets()?
        .iter()
        .map(|&outlet| model.outlet_fact(outlet))
        .collect()
}

/// Every input dimension of `model` is a number.
fn inputs_concrete(model: &TypedModel) -> TractResult<bool> {
    Ok(input_facts(model)?
        .iter()
        .all(|fact| fact.shape.as_concrete().is_some()))
}

/// An optimised, runnable plan of `model` in `layout`.
pub(super) fn build(model: TypedModel, layout: Layout) -> TractResult<Plan> {
    layout::apply(model, layout)?
        .into_optimized()?
        .into_runnable()
}
