// A tensor's shape is in its type: a matrix of another shape cannot stand in for it.
use tvl::{MatVec, Model};

#[tvl::tvl_model("../../../../model-configs/stories260K.toml")]
pub struct Stories260K;

fn main() {
    let layer = Stories260K::LAYERS[0];
    // w1 is hidden × dim (172 × 64), wq is dim × dim (64 × 64).
    let queries: <Stories260K as Model>::Attn = layer.w1;
    let _ = queries.panels();
}
