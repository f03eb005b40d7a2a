//! `vendgate completions SHELL` and `vendgate man`: generated from the clap
//! definition of the command line, so they always match it.

use std::io::Write;

use clap::CommandFactory;

use super::{Cli, Shell, EXIT_FATAL};

pub fn completions(shell: Shell) -> i32 {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "vendgate", &mut out);
    write_out(&out)
}

/// One page for every subcommand: the top-level page with a section per
/// subcommand appended (clap_mangen renders one command per call).
pub fn man() -> i32 {
    let command = Cli::command();
    let mut out = Vec::new();
    let rendered = clap_mangen::Man::new(command.clone()).render(&mut out);
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("vendgate {}", sub.get_name());
        let sub = sub.clone().bin_name(name);
        if rendered.is_err() {
            break;
        }
        let _ = writeln!(out, ".SH \"VENDGATE {}\"", sub.get_name().to_uppercase());
        let man = clap_mangen::Man::new(sub);
        let sections = man
            .render_description_section(&mut out)
            .and_then(|()| man.render_synopsis_section(&mut out))
            .and_then(|()| man.render_options_section(&mut out));
        if let Err(e) = sections {
            eprintln!("vendgate: cannot render the man page: {e}");
            return EXIT_FATAL;
        }
    }
    if let Err(e) = rendered {
        eprintln!("vendgate: cannot render the man page: {e}");
        return EXIT_FATAL;
    }
    write_out(&out)
}

fn write_out(bytes: &[u8]) -> i32 {
    match std::io::stdout().write_all(bytes) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vendgate: {e}");
            EXIT_FATAL
        }
    }
}
