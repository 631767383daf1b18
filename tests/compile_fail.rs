//! Compile errors that must stay errors: a bad config at the attribute, naming the TOML key;
//! a tensor of another shape where the type says one shape; a matrix whose stored columns are
//! not its columns padded.
#[test]
fn bad_configs_do_not_compile() {
    // Under emulation the test binary cannot drive a cross build; the macro runs on the host
    // either way, so the native run covers it.
    if std::env::var_os("TVL_TEST_RUNNER").is_some() {
        use std::io::Write; // not eprintln!, which the harness hides for passing tests
        let _ = writeln!(std::io::stderr(), "SKIPPED under emulation: compile-fail tests run in the native test suite");
        return;
    }
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
