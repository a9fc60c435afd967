fn main() -> std::process::ExitCode {
    connagent::cli::main()
}
