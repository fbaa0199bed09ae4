//! What a new user reads: `--help` with the three main uses, the manual
//! pages (rendered by `man -l`) and shell completions (bash checks them).

use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_qtrace")
}

fn qtrace(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().expect("qtrace runs");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_shows_the_incident_staging_and_jq_uses() {
    let help = qtrace(&["--help"]);
    for want in ["sudo qtrace watch --port 8080", "--metrics-addr", "| jq", "qtrace demo"] {
        assert!(help.contains(want), "--help lacks {want:?}:\n{help}");
    }
}

#[test]
fn manual_pages_render_with_man() {
    let dir = std::env::temp_dir().join(format!("qtrace-man-{}", std::process::id()));
    qtrace(&["manpage", "--dir", dir.to_str().unwrap()]);
    let render = |page: &str| {
        let out = Command::new("man").arg("-l").arg(dir.join(page)).env("MANWIDTH", "120").output().expect("man runs");
        assert!(out.status.success(), "man -l {page}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stderr.is_empty(), "man -l {page} warns: {}", String::from_utf8_lossy(&out.stderr));
        // Without a terminal, man still overstrikes bold (`N\bN`): undo it.
        let mut text = String::new();
        for c in String::from_utf8_lossy(&out.stdout).chars() {
            if c == '\u{8}' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        text
    };
    let main = render("qtrace.1");
    for want in ["NAME", "SYNOPSIS", "qtrace-watch(1)", "EXAMPLES", "sudo qtrace watch --port 8080", "ENVIRONMENT", "QTRACE_BTF"] {
        assert!(main.contains(want), "qtrace(1) lacks {want:?}:\n{main}");
    }
    // Every subcommand the main page names has its page.
    for sub in ["watch", "listeners", "doctor", "demo", "completions", "manpage"] {
        let page = render(&format!("qtrace-{sub}.1"));
        assert!(page.contains(&format!("qtrace-{sub}")), "{page}");
    }
    assert!(render("qtrace-watch.1").contains("--metrics-addr"));
    assert!(!dir.join("qtrace-demo-scenario.1").exists(), "the hidden subcommand has no page");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bash_completions_parse_and_complete_subcommands() {
    let script = qtrace(&["completions", "bash"]);
    let file = std::env::temp_dir().join(format!("qtrace-completion-{}.bash", std::process::id()));
    std::fs::write(&file, &script).unwrap();
    // Load it and ask for the words after `qtrace w`.
    let probe = format!(
        "source {}; COMP_WORDS=(qtrace w); COMP_CWORD=1; COMP_LINE='qtrace w'; COMP_POINT=8; _qtrace qtrace w qtrace; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let out = Command::new("bash").args(["-c", &probe]).output().expect("bash runs");
    let _ = std::fs::remove_file(&file);
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(words.trim(), "watch", "completing `qtrace w`");
    for shell in ["zsh", "fish"] {
        assert!(qtrace(&["completions", shell]).contains("metrics-addr"), "{shell} completions");
    }
}
