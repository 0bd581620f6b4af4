/// The allocator (see docs/scaling.md): mimalloc keeps each size class on its own pages and
/// returns pages that empty, so the tasks of connections that parked leave no holes pinned
/// between long-lived objects (with glibc's allocator an idle connection kept ~0.9 KiB more,
/// and throughput was lower).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ferromq::cli::main()
}
