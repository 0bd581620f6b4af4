fn main() -> std::process::ExitCode {
    ferromq::cli::main()
}
