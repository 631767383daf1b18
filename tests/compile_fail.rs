//! A bad config is a compile error at the attribute that names the TOML key.
#[test]
fn bad_configs_do_not_compile() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
