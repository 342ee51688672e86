//! The default boot entry of an ISO's boot loader configuration: kernel, initrds, command line.
//!
//! Where it sits: `--iso` reads `/EFI/BOOT/grub.cfg` (or `/boot/grub/grub.cfg`) and
//! `/isolinux/isolinux.cfg` (or `/boot/isolinux/isolinux.cfg`, `/syslinux/syslinux.cfg`) from
//! the ISO and hands the text here. Netboot and kexec users do the same by hand with a NixOS
//! ISO, whose iso-image.nix writes, in GRUB:
//!
//! ```text
//! menuentry 'NixOS 25.05 Installer' --class installer {
//!   linux /boot/bzImage ${isoboot} init=/nix/store/…-nixos-system-…/init root=LABEL=nixos-… boot.shell_on_fail …
//!   initrd /boot/initrd
//! }
//! ```
//!
//! and in isolinux `DEFAULT boot`, `LABEL boot`, `LINUX /boot/bzImage`, `APPEND init=… root=…`,
//! `INITRD /boot/initrd`, followed by variants (`nomodeset`, `copytoram`, …) that are not picked
//! unless they are the default.
//!
//! GRUB: the entry `set default=` names (a number counting top-level `menuentry`/`submenu`,
//! or a title), else the first top-level `menuentry`; `hiddenentry` blocks are not counted.
//! `linux`/`linuxefi`/`linux16` and `initrd`/`initrdefi`/`initrd16` (several files allowed);
//! a `(device)` prefix is dropped; `$var`/`${var}` expand to the value of a top-level,
//! unconditional `set var=value`, else to nothing (NixOS's `${isoboot}` is only set by GRUB
//! loopback boots). Quotes and backslashes are handled as GRUB's lexer does for simple words.
//! isolinux/syslinux: `DEFAULT label` (else a `MENU DEFAULT` label, else the first `LABEL`);
//! `LINUX`/`KERNEL`, `APPEND` (its `initrd=` word is taken as the initrd list and removed),
//! `INITRD` (comma-separated); relative paths are relative to the configuration's folder.
//!
//! Does not run GRUB script (`if`, `source`, `configfile`, functions) or follow syslinux
//! `INCLUDE`/`CONFIG`; an entry that needs them is reported as having no kernel.

/// The chosen entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// The entry's title or label (for messages).
    pub title: String,
    /// Absolute path of the kernel inside the ISO.
    pub kernel: String,
    /// Absolute paths of the initrds, in order.
    pub initrds: Vec<String>,
    /// The kernel command line.
    pub cmdline: String,
}

/// Which boot loader syntax a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// GRUB 2 `grub.cfg`.
    Grub,
    /// `isolinux.cfg` / `syslinux.cfg`.
    Syslinux,
}

/// The configurations `--iso` looks at, in order, with their syntax.
pub const CONFIGS: &[(&str, Syntax)] = &[
    ("/EFI/BOOT/grub.cfg", Syntax::Grub),
    ("/boot/grub/grub.cfg", Syntax::Grub),
    ("/isolinux/isolinux.cfg", Syntax::Syslinux),
    ("/boot/isolinux/isolinux.cfg", Syntax::Syslinux),
    ("/syslinux/syslinux.cfg", Syntax::Syslinux),
];

/// Parses `text` (the file at `path` in the ISO) and returns its default entry, or why none.
pub fn default_entry(text: &str, path: &str, syntax: Syntax) -> Result<BootEntry, String> {
    match syntax {
        Syntax::Grub => grub(text),
        Syntax::Syslinux => {
            let dir = match path.rfind('/') {
                Some(i) => &path[..i],
                None => "",
            };
            syslinux(text, dir)
        }
    }
}

// ---------------------------------------------------------------- GRUB

struct GrubEntry {
    title: String,
    kernel: Option<Vec<String>>,
    initrds: Vec<String>,
}

fn grub(text: &str) -> Result<BootEntry, String> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut default: Option<String> = None;
    // Top-level entries in menu order: Some(entry) for a menuentry, None for a submenu.
    let mut top: Vec<Option<GrubEntry>> = Vec::new();
    // Block nesting: what each open `{` belongs to.
    #[derive(PartialEq)]
    enum Block {
        Entry,
        Other,
    }
    let mut stack: Vec<Block> = Vec::new();
    let mut current: Option<GrubEntry> = None;
    // `if … fi` depth, so only unconditional `set`s count.
    let mut cond_depth = 0usize;
    for line in logical_lines(text) {
        let words = grub_words(&line, &vars);
        let Some(first) = words.first().map(String::as_str) else {
            continue;
        };
        // `if …; then …; fi` may sit on one line: count every keyword, not just the first.
        for w in &words {
            match w.trim_matches(';') {
                "if" | "while" | "for" | "until" => cond_depth += 1,
                "fi" | "done" => cond_depth = cond_depth.saturating_sub(1),
                _ => {}
            }
        }
        match first {
            "}" => {
                if stack.pop() == Some(Block::Entry)
                    && let Some(e) = current.take()
                {
                    top.push(Some(e));
                }
                continue;
            }
            "menuentry" | "submenu" | "hiddenentry" | "function" => {
                let opens = words.last().is_some_and(|w| w == "{");
                if first == "menuentry" && stack.is_empty() {
                    current = Some(GrubEntry {
                        title: words.get(1).cloned().unwrap_or_default(),
                        kernel: None,
                        initrds: Vec::new(),
                    });
                    if opens {
                        stack.push(Block::Entry);
                    }
                } else {
                    if first == "submenu" && stack.is_empty() {
                        top.push(None);
                    }
                    if opens {
                        stack.push(Block::Other);
                    }
                }
                continue;
            }
            _ => {}
        }
        if words.last().is_some_and(|w| w == "{") && !matches!(first, "menuentry") {
            stack.push(Block::Other);
        }
        if stack.is_empty() && cond_depth == 0 && first == "set" {
            if let Some((k, v)) = words.get(1).and_then(|w| w.split_once('=')) {
                if k == "default" {
                    default = Some(v.to_owned());
                }
                vars.retain(|(name, _)| name != k);
                vars.push((k.to_owned(), v.to_owned()));
            }
            continue;
        }
        if let Some(e) = current.as_mut() {
            match first {
                "linux" | "linuxefi" | "linux16" => e.kernel = Some(words[1..].to_vec()),
                "initrd" | "initrdefi" | "initrd16" => {
                    e.initrds = words[1..].iter().map(|w| grub_path(w)).collect()
                }
                _ => {}
            }
        }
    }
    let entry = match default.as_deref().map(str::trim) {
        None | Some("") => top.iter().flatten().next(),
        Some(d) => match d.parse::<usize>() {
            Ok(n) => top.get(n).and_then(Option::as_ref),
            Err(_) => top.iter().flatten().find(|e| e.title == d),
        }
        .or_else(|| top.iter().flatten().next()),
    }
    .ok_or_else(|| "no menuentry".to_owned())?;
    let Some(kernel_line) = &entry.kernel else {
        return Err(format!("menu entry '{}' has no linux line", entry.title));
    };
    let Some(kernel) = kernel_line.first() else {
        return Err(format!(
            "menu entry '{}' names no kernel on its linux line",
            entry.title
        ));
    };
    Ok(BootEntry {
        title: entry.title.clone(),
        kernel: grub_path(kernel),
        initrds: entry.initrds.clone(),
        cmdline: kernel_line[1..].join(" "),
    })
}

/// Joins lines ending in a backslash, drops comments and blank lines, and splits a line that
/// opens or closes a block on `{`/`}` so each becomes a word of its own line.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut acc = String::new();
    for raw in text.lines() {
        if let Some(stripped) = raw.strip_suffix('\\') {
            acc.push_str(stripped);
            acc.push(' ');
            continue;
        }
        acc.push_str(raw);
        let line = std::mem::take(&mut acc);
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        // A closing brace at the start of a line, possibly followed by more.
        if let Some(rest) = t.strip_prefix('}') {
            out.push("}".to_owned());
            if !rest.trim().is_empty() {
                out.push(rest.trim().to_owned());
            }
            continue;
        }
        out.push(t.to_owned());
    }
    out
}

/// Splits a GRUB line into words: quotes, backslash escapes, `#` comments, variables.
fn grub_words(line: &str, vars: &[(String, String)]) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let lookup = |name: &str| -> String {
        vars.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let var = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, cur: &mut String| {
        let mut name = String::new();
        if chars.peek() == Some(&'{') {
            chars.next();
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
                name.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
        }
        cur.push_str(&lookup(&name));
    };
    while let Some(c) = chars.next() {
        match c {
            '#' if !in_word => break,
            ' ' | '\t' => {
                if in_word && !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                in_word = false;
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '\'' => {
                in_word = true;
                for n in chars.by_ref() {
                    if n == '\'' {
                        break;
                    }
                    cur.push(n);
                }
            }
            '"' => {
                in_word = true;
                while let Some(n) = chars.next() {
                    match n {
                        '"' => break,
                        '\\' => {
                            if let Some(m) = chars.next() {
                                cur.push(m);
                            }
                        }
                        '$' => var(&mut chars, &mut cur),
                        _ => cur.push(n),
                    }
                }
            }
            '$' => {
                in_word = true;
                var(&mut chars, &mut cur);
            }
            _ => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// `(hd0,msdos1)/boot/x` or `($root)/boot/x` → `/boot/x`; a relative path is taken from the
/// root.
fn grub_path(word: &str) -> String {
    let rest = match word.strip_prefix('(') {
        Some(r) => r.split_once(')').map(|(_, p)| p).unwrap_or(r),
        None => word,
    };
    if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    }
}

// ---------------------------------------------------------------- syslinux

#[derive(Default)]
struct Label {
    name: String,
    kernel: Option<String>,
    append: Option<String>,
    initrd: Option<String>,
    menu_default: bool,
}

fn syslinux(text: &str, dir: &str) -> Result<BootEntry, String> {
    let mut default: Option<String> = None;
    let mut labels: Vec<Label> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, rest) = match line.split_once(char::is_whitespace) {
            Some((k, r)) => (k.to_ascii_lowercase(), r.trim()),
            None => (line.to_ascii_lowercase(), ""),
        };
        let cur = labels.last_mut();
        match (key.as_str(), cur) {
            ("default", _) => default = Some(rest.to_owned()),
            ("label", _) => labels.push(Label {
                name: rest.to_owned(),
                ..Label::default()
            }),
            ("linux" | "kernel", Some(l)) => l.kernel = Some(rest.to_owned()),
            ("append", Some(l)) => l.append = Some(rest.to_owned()),
            ("initrd", Some(l)) => l.initrd = Some(rest.to_owned()),
            ("menu", Some(l)) if rest.eq_ignore_ascii_case("default") => l.menu_default = true,
            _ => {}
        }
    }
    let label = default
        .as_deref()
        .and_then(|d| {
            labels
                .iter()
                .find(|l| l.name == d)
                .or_else(|| labels.iter().find(|l| l.name.eq_ignore_ascii_case(d)))
        })
        .or_else(|| labels.iter().find(|l| l.menu_default))
        .or_else(|| labels.first())
        .ok_or_else(|| "no LABEL".to_owned())?;
    let Some(kernel) = label
        .kernel
        .as_deref()
        .and_then(|k| k.split_whitespace().next())
    else {
        return Err(format!("LABEL {} has no LINUX or KERNEL line", label.name));
    };
    let mut initrd_list = label.initrd.clone();
    let mut words = Vec::new();
    for w in label.append.as_deref().unwrap_or("").split_whitespace() {
        match w.strip_prefix("initrd=") {
            Some(list) => initrd_list = Some(list.to_owned()),
            None => words.push(w),
        }
    }
    let resolve = |p: &str| {
        if p.starts_with('/') {
            p.to_owned()
        } else {
            format!("{dir}/{p}")
        }
    };
    Ok(BootEntry {
        title: label.name.clone(),
        kernel: resolve(kernel),
        initrds: initrd_list
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(resolve)
            .collect(),
        cmdline: words.join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIXOS_GRUB: &str = r#"
set textmode=false
set timeout=10

clear
echo "Loading graphical boot menu..."

hiddenentry 'Text mode' --hotkey 't' {
  loadfont (\$root)/EFI/BOOT/unicode.pf2
  set textmode=true
  terminal_output console
}

# If the parameter iso_path is set, append the findiso parameter to the kernel
# line. We need this to allow the nixos iso to be booted from grub directly.
if [ ${iso_path} ] ; then
  set isoboot="findiso=${iso_path}"
fi

#
# Menu entries
#

menuentry 'NixOS 25.05.20250101.abcdef Installer ' --class installer {
  # Fallback to UEFI console for boot, efifb sometimes has difficulties.
  terminal_output console

  linux /boot/bzImage ${isoboot} init=/nix/store/abc-nixos-system-nixos-25.05/init root=LABEL=nixos-minimal-25.05-x86_64 boot.shell_on_fail  loglevel=4
  initrd /boot/initrd
}
menuentry 'NixOS 25.05 Installer (nomodeset)' --class nomodeset {
  linux /boot/bzImage ${isoboot} init=/nix/store/abc/init root=LABEL=nixos nomodeset
  initrd /boot/initrd
}
submenu "HiDPI, Quirks and Accessibility" --class hidpi --class submenu {
  menuentry 'copytoram' {
    linux /boot/bzImage copytoram
    initrd /boot/initrd
  }
}
"#;

    #[test]
    fn grub_picks_the_first_entry_and_drops_unset_variables() {
        let e = default_entry(NIXOS_GRUB, "/EFI/BOOT/grub.cfg", Syntax::Grub).unwrap();
        assert_eq!(e.kernel, "/boot/bzImage");
        assert_eq!(e.initrds, ["/boot/initrd"]);
        assert_eq!(
            e.cmdline,
            "init=/nix/store/abc-nixos-system-nixos-25.05/init root=LABEL=nixos-minimal-25.05-x86_64 boot.shell_on_fail loglevel=4"
        );
        assert_eq!(e.title, "NixOS 25.05.20250101.abcdef Installer ");
    }

    #[test]
    fn grub_honours_set_default_by_number_and_title() {
        let text = format!("set default=1\n{NIXOS_GRUB}");
        let e = default_entry(&text, "/boot/grub/grub.cfg", Syntax::Grub).unwrap();
        assert!(e.cmdline.ends_with("nomodeset"), "{}", e.cmdline);
        let text = "set default=\"second\"\nmenuentry first {\n linux /a x=1\n}\nmenuentry \"second\" {\n linux ($root)/b y=2 \\\n  z=3\n initrd /i1 /i2\n}\n";
        let e = default_entry(text, "/boot/grub/grub.cfg", Syntax::Grub).unwrap();
        assert_eq!(e.kernel, "/b");
        assert_eq!(e.cmdline, "y=2 z=3");
        assert_eq!(e.initrds, ["/i1", "/i2"]);
        // A submenu takes a number, but is not bootable itself.
        let text = format!("set default=2\n{NIXOS_GRUB}");
        let e = default_entry(&text, "/EFI/BOOT/grub.cfg", Syntax::Grub).unwrap();
        assert!(e.cmdline.contains("loglevel=4"), "falls back to the first");
    }

    #[test]
    fn grub_one_line_conditionals_do_not_hide_a_later_default() {
        let text = format!(
            "set with_serial=no\nif serial; then set with_serial=yes ;fi\nexport with_serial\nset default=1\n{NIXOS_GRUB}"
        );
        let e = default_entry(&text, "/EFI/boot/grub.cfg", Syntax::Grub).unwrap();
        assert!(e.cmdline.ends_with("nomodeset"), "{}", e.cmdline);
        // A `set default` inside a conditional is not taken.
        let text = format!("if [ x ]; then\n set default=1\nfi\n{NIXOS_GRUB}");
        let e = default_entry(&text, "/EFI/boot/grub.cfg", Syntax::Grub).unwrap();
        assert!(e.cmdline.ends_with("loglevel=4"), "{}", e.cmdline);
    }

    #[test]
    fn grub_without_a_linux_line_is_reported() {
        let err =
            default_entry("menuentry x {\n chainloader /efi\n}\n", "/g", Syntax::Grub).unwrap_err();
        assert_eq!(err, "menu entry 'x' has no linux line");
        let err = default_entry("set timeout=1\n", "/g", Syntax::Grub).unwrap_err();
        assert_eq!(err, "no menuentry");
    }

    const NIXOS_ISOLINUX: &str = "SERIAL 0 115200
TIMEOUT 100
UI vesamenu.c32
MENU BACKGROUND /isolinux/background.png

DEFAULT boot

LABEL boot-nomodeset
MENU LABEL NixOS (nomodeset)
LINUX /boot/bzImage
APPEND init=/nix/store/abc/init root=LABEL=nixos nomodeset
INITRD /boot/initrd

LABEL boot
MENU LABEL NixOS 25.05 Installer
LINUX /boot/bzImage
APPEND init=/nix/store/abc-nixos-system/init root=LABEL=nixos-minimal-25.05-x86_64 boot.shell_on_fail
INITRD /boot/initrd

LABEL boot-copytoram
LINUX /boot/bzImage
APPEND init=/nix/store/abc/init copytoram
INITRD /boot/initrd
";

    #[test]
    fn isolinux_picks_the_default_label() {
        let e = default_entry(NIXOS_ISOLINUX, "/isolinux/isolinux.cfg", Syntax::Syslinux).unwrap();
        assert_eq!(e.title, "boot");
        assert_eq!(e.kernel, "/boot/bzImage");
        assert_eq!(e.initrds, ["/boot/initrd"]);
        assert_eq!(
            e.cmdline,
            "init=/nix/store/abc-nixos-system/init root=LABEL=nixos-minimal-25.05-x86_64 boot.shell_on_fail"
        );
    }

    #[test]
    fn isolinux_relative_paths_and_append_initrd() {
        let text = "label one\n kernel vmlinuz\n append initrd=a.img,/b.img quiet\n";
        let e = default_entry(text, "/isolinux/isolinux.cfg", Syntax::Syslinux).unwrap();
        assert_eq!(e.kernel, "/isolinux/vmlinuz");
        assert_eq!(e.initrds, ["/isolinux/a.img", "/b.img"]);
        assert_eq!(e.cmdline, "quiet");
        let err =
            default_entry("default x\n", "/isolinux/isolinux.cfg", Syntax::Syslinux).unwrap_err();
        assert_eq!(err, "no LABEL");
    }
}
