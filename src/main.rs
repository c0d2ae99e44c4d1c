fn main() -> std::process::ExitCode {
    wecom_zone::cli::main()
}
