// Paths are relative to CARGO_MANIFEST_DIR, which trybuild points at its own project under
// target/tests/trybuild/tvl.
#[tvl::tvl_model("../../../../tests/ui/heads-do-not-divide-dim.toml")]
pub struct HeadsDoNotDivideDim;

#[tvl::tvl_model("../../../../tests/ui/unknown-key.toml")]
pub struct UnknownKey;

#[tvl::tvl_model("../../../../tests/ui/missing-key.toml")]
pub struct MissingKey;

#[tvl::tvl_model("../../../../tests/ui/q4-groups-of-16.toml")]
pub struct Q4GroupsOf16;

#[tvl::tvl_model("../../../../tests/ui/no-such-file.toml")]
pub struct NoSuchFile;

#[tvl::tvl_model(64)]
pub struct NotAPath;

#[tvl::tvl_model("../../../../model-configs/stories260K.toml")]
pub struct NotAUnitStruct {
    field: u32,
}

fn main() {}
