// A typed matrix cannot be built with stored columns that are not its columns padded to
// whole panel blocks: 172 f32 columns are stored as 176.
const UNPADDED: tvl::Matrix<64, 172, 172, tvl::F32> = tvl::Matrix::at(0);

fn main() {
    let _ = tvl::MatVec::panels(&UNPADDED);
}
