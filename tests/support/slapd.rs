//! A throw-away OpenLDAP server (slapd) for the Ldap package's tests.
//!
//! [`Slapd::start`] builds a cn=config directory offline with `slapadd -n 0` (mdb database for
//! `dc=example,dc=com`, root DN `cn=admin,dc=example,dc=com` with a plain-text password, the
//! core, cosine, nis and inetorgperson schemas, `olcSizeLimit: 500` for everyone but the root
//! DN), loads the base entry, a non-root reader ([`READER_DN`], [`READER_PASSWORD`]) and the
//! caller's LDIF with `slapadd -n 1`, then runs `slapd` in the foreground on a free loopback
//! port. Dropping the value kills the server and deletes its files.
//!
//! Besides those schemas, a small one of the tests' own (`badgeHolder`/`badgeData`, see
//! `TEST_SCHEMA`).
//!
//! [`Slapd::start_with`] takes [`Options`]: another size limit, `olcLimits` lines, and TLS: a
//! test CA made with rcgen ([`Slapd::ca_file`]), a server certificate for 127.0.0.1 and
//! localhost, StartTLS on the plain port and an `ldaps://` listener on a second free port
//! ([`Slapd::ldaps_url`]).
//!
//! Paths follow Debian's `slapd` package: `/usr/sbin/slapd`, `/usr/sbin/slapadd`,
//! `/etc/ldap/schema/*.ldif`, `/usr/lib/ldap/back_mdb.so`.
//!
//! OpenLDAP exempts the root DN from size limits: to see the server's 500-entry limit (result
//! code 4), search as anonymous (every entry but userPassword is readable by anyone).

use base64::Engine;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BASE: &str = "dc=example,dc=com";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
/// Distinctive, so that tests can look for it in outputs and logs.
pub const ADMIN_PASSWORD: &str = "slapd-admin-canary-4f9c";
/// A login that is not the root DN, so that the server's limits apply to it.
pub const READER_DN: &str = "cn=reader,dc=example,dc=com";
/// Holds `; / @ ' "`, which connection strings, URLs and shells treat specially; distinctive, so
/// that tests can look for it in outputs.
pub const READER_PASSWORD: &str = "rd;pw/x@y'z\"-canary-91ab";

const SCHEMA_DIR: &str = "/etc/ldap/schema";
const SCHEMAS: &[&str] = &["core", "cosine", "nis", "inetorgperson"];
/// A schema of the tests' own: `badgeData`, whose syntax is an octet string that the server's
/// `ldapSyntaxes` marks `X-NOT-HUMAN-READABLE` (a syntax no client knows by its OID), allowed by
/// the auxiliary class `badgeHolder`.
const TEST_SCHEMA: &str = "dn: cn=connagent,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: connagent
olcLdapSyntaxes: ( 1.3.6.1.4.1.99999.1.0 DESC 'Badge blob' X-NOT-HUMAN-READABLE 'TRUE' X-SUBST '1.3.6.1.4.1.1466.115.121.1.40' )
olcAttributeTypes: ( 1.3.6.1.4.1.99999.1.1 NAME 'badgeData' SYNTAX 1.3.6.1.4.1.99999.1.0 )
olcObjectClasses: ( 1.3.6.1.4.1.99999.2.1 NAME 'badgeHolder' AUXILIARY MAY badgeData )

";
const MODULE_DIR: &str = "/usr/lib/ldap";
const INSTALL_HINT: &str = "install OpenLDAP's server and tools: apt-get install slapd ldap-utils";
const READY_WAIT: Duration = Duration::from_secs(20);

/// How [`Slapd::start_with`] configures the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// `olcSizeLimit` of the frontend and the database (`500`; OpenLDAP syntax, e.g.
    /// `size.soft=50 size.hard=50`).
    pub size_limit: String,
    /// `olcLimits` values of the database, in order (e.g.
    /// `dn.exact="cn=reader,dc=example,dc=com" size.prtotal=unlimited`).
    pub limits: Vec<String>,
    /// A test CA and certificate: StartTLS on the plain port, and an LDAPS port.
    pub tls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            size_limit: "500".into(),
            limits: Vec::new(),
            tls: false,
        }
    }
}

pub struct Slapd {
    pub port: u16,
    /// The LDAPS port, with [`Options::tls`].
    pub tls_port: Option<u16>,
    pub base: String,
    pub admin_dn: String,
    pub admin_password: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl Slapd {
    /// Starts a server holding the base entry `dc=example,dc=com` plus the entries of `ldif`
    /// (which must not repeat the base entry; see [`people_ldif`]).
    pub fn start(ldif: &str) -> Slapd {
        Slapd::start_with(ldif, &Options::default())
    }

    /// [`Slapd::start`] with other limits, or TLS.
    pub fn start_with(ldif: &str, options: &Options) -> Slapd {
        let slapd = find_tool("slapd");
        let slapadd = find_tool("slapadd");
        for s in SCHEMAS {
            let p = Path::new(SCHEMA_DIR).join(format!("{s}.ldif"));
            assert!(p.is_file(), "{} is missing: {INSTALL_HINT}", p.display());
        }
        let dir = tempfile::tempdir().expect("temp dir for slapd");
        let conf = dir.path().join("slapd.d");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&conf).expect("mkdir slapd.d");
        std::fs::create_dir_all(&data).expect("mkdir data");

        let tls = options.tls.then(|| make_pki(dir.path()));
        let config_ldif = dir.path().join("config.ldif");
        std::fs::write(
            &config_ldif,
            config_ldif_text(dir.path(), &data, options, tls.as_ref()),
        )
        .expect("write config.ldif");
        run(Command::new(&slapadd)
            .args(["-n", "0", "-F"])
            .arg(&conf)
            .arg("-l")
            .arg(&config_ldif));

        let data_ldif = dir.path().join("data.ldif");
        std::fs::write(
            &data_ldif,
            format!("{}\n{}\n{}\n", base_entry(), reader_entry(), ldif.trim()),
        )
        .expect("write data.ldif");
        run(Command::new(&slapadd)
            .args(["-q", "-n", "1", "-F"])
            .arg(&conf)
            .arg("-l")
            .arg(&data_ldif));

        let port = free_port();
        let tls_port = options.tls.then(free_port);
        let child = spawn(&slapd, &conf, port, tls_port, dir.path());
        let mut server = Slapd {
            port,
            tls_port,
            base: BASE.to_string(),
            admin_dn: ADMIN_DN.to_string(),
            admin_password: ADMIN_PASSWORD.to_string(),
            dir,
            child,
        };
        server.wait_ready();
        server
    }

    /// `ldap://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:<tls_port>` (with [`Options::tls`]).
    pub fn ldaps_url(&self) -> String {
        format!(
            "ldaps://127.0.0.1:{}",
            self.tls_port.expect("started without Options::tls")
        )
    }

    /// The PEM file of the test CA that signed the server's certificate (with [`Options::tls`]).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("pki/ca.pem")
    }

    /// Kills the server (its data stays, for [`Slapd::restart`]).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server if it runs, and starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        let slapd = find_tool("slapd");
        self.child = spawn(
            &slapd,
            &self.dir.path().join("slapd.d"),
            self.port,
            self.tls_port,
            self.dir.path(),
        );
        self.wait_ready();
    }

    /// Waits until the ports accept TCP connections; panics with slapd's log if it exits or
    /// does not listen within 20 seconds.
    fn wait_ready(&mut self) {
        for port in std::iter::once(self.port).chain(self.tls_port) {
            self.wait_port(port);
        }
    }

    fn wait_port(&mut self, port: u16) {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + READY_WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "slapd exited ({status}) before listening on port {port}:\n{}",
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                let log = self.log();
                self.stop();
                panic!("slapd did not listen on port {port} within {READY_WAIT:?}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What slapd wrote on stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn find_tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = vec!["/usr/sbin".into(), "/usr/local/sbin".into()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found in /usr/sbin or PATH: {INSTALL_HINT}"))
}

fn run(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn spawn(slapd: &Path, conf: &Path, port: u16, tls_port: Option<u16>, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("slapd.log"))
        .expect("slapd.log");
    // -d keeps slapd in the foreground, so that the child is the server and can be killed.
    // Running as root is fine here: no -u/-g.
    let mut urls = format!("ldap://127.0.0.1:{port}/");
    if let Some(p) = tls_port {
        urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
    }
    Command::new(slapd)
        .args(["-d", "0", "-h"])
        .arg(urls)
        .arg("-F")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", slapd.display()))
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The files of a test PKI: CA certificate, server certificate and key (PEM).
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A test CA and a server certificate for 127.0.0.1 and localhost, in `<dir>/pki`.
fn make_pki(dir: &Path) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).expect("mkdir pki");
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "connagent slapd test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let server = params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    let files = Pki {
        ca: pki.join("ca.pem"),
        cert: pki.join("server.pem"),
        key: pki.join("server.key"),
    };
    std::fs::write(&files.ca, ca_cert.pem()).expect("write ca.pem");
    std::fs::write(&files.cert, server.pem()).expect("write server.pem");
    std::fs::write(&files.key, server_key.serialize_pem()).expect("write server.key");
    files
}

fn config_ldif_text(dir: &Path, data: &Path, options: &Options, tls: Option<&Pki>) -> String {
    let mut out = format!(
        "dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {dir}/slapd.pid
olcArgsFile: {dir}/slapd.args
olcLogLevel: none
olcToolThreads: 1
",
        dir = dir.display()
    );
    if let Some(pki) = tls {
        out.push_str(&format!(
            "olcTLSCACertificateFile: {}
olcTLSCertificateFile: {}
olcTLSCertificateKeyFile: {}
",
            pki.ca.display(),
            pki.cert.display(),
            pki.key.display()
        ));
    }
    out.push('\n');
    // Debian builds back_mdb as a module; other builds may have it linked in.
    if ["back_mdb.so", "back_mdb.la"]
        .iter()
        .any(|m| Path::new(MODULE_DIR).join(m).is_file())
    {
        out.push_str(&format!(
            "dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {MODULE_DIR}
olcModuleLoad: back_mdb

"
        ));
    }
    out.push_str(
        "dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

",
    );
    // As in Debian's slapd.init.ldif: the includes on consecutive lines, then a blank line.
    for s in SCHEMAS {
        out.push_str(&format!("include: file://{SCHEMA_DIR}/{s}.ldif\n"));
    }
    out.push('\n');
    out.push_str(TEST_SCHEMA);
    out.push_str(&format!(
        "dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend
olcSizeLimit: {size_limit}
olcAccess: {{0}}to dn.exact=\"\" by * read
olcAccess: {{1}}to dn.base=\"cn=Subschema\" by * read

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcDbDirectory: {data}
olcSuffix: {BASE}
olcRootDN: {ADMIN_DN}
olcRootPW: {ADMIN_PASSWORD}
olcDbMaxSize: 1073741824
olcSizeLimit: {size_limit}
{limits}olcDbIndex: objectClass eq
olcDbIndex: cn,uid eq
olcDbIndex: member eq
olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {{1}}to * by dn.exact=\"{READER_DN}\" read by * read
",
        data = data.display(),
        size_limit = options.size_limit,
        limits = options
            .limits
            .iter()
            .enumerate()
            .map(|(i, l)| format!("olcLimits: {{{i}}}{l}\n"))
            .collect::<String>(),
    ));
    out
}

fn base_entry() -> String {
    format!(
        "dn: {BASE}
objectClass: top
objectClass: dcObject
objectClass: organization
dc: example
o: Example
"
    )
}

/// The reader: an organizationalRole with a userPassword (base64 in the LDIF: it holds quotes).
fn reader_entry() -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "dn: {READER_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: reader
userPassword:: {}
",
        b64.encode(READER_PASSWORD)
    )
}

/// The DN of person `i` of [`people_ldif`].
pub fn user_dn(i: usize) -> String {
    format!("uid=user{i:05},ou=people,{BASE}")
}

/// The DN of group `g` of [`people_ldif`].
pub fn group_dn(g: usize) -> String {
    format!("cn=group{g:04},ou=groups,{BASE}")
}

/// The bytes of person `i`'s jpegPhoto (every fifth person has one): not UTF-8.
pub fn photo_of(i: usize) -> Vec<u8> {
    vec![0xff, 0xd8, 0xff, 0xe0, (i % 256) as u8, 0x00, 0x10, 0x80]
}

/// Deterministic entries: `ou=people` and `ou=groups`, then `n` people and `groups` groups.
///
/// Person `i` (0-based, DN [`user_dn`]) is an inetOrgPerson with `uid: user{i:05}`,
/// `cn: User {i}`, `sn: Number{i}`, `givenName: User`, `mail: user{i:05}@example.com`,
/// `employeeNumber: {i}`, `description: Member of staff, number {i}` (a comma), one
/// `telephoneNumber` (`+1 555 {i:07}`) plus a second one (`+1 666 {i:07}`) when `i` is even,
/// and `jpegPhoto` = [`photo_of`]`(i)` when `i % 5 == 0`.
///
/// Group `g` (DN [`group_dn`]) is a groupOfNames with `cn: group{g:04}` and the members
/// `user_dn((g * members_per_group + j) % n)` for `j` in `0..min(members_per_group, n)` (distinct,
/// in that order). groupOfNames needs a member: a group that would have none gets the admin DN.
pub fn people_ldif(n: usize, groups: usize, members_per_group: usize) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = format!(
        "dn: ou=people,{BASE}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{BASE}
objectClass: organizationalUnit
ou: groups

"
    );
    for i in 0..n {
        out.push_str(&format!(
            "dn: {dn}
objectClass: top
objectClass: person
objectClass: organizationalPerson
objectClass: inetOrgPerson
uid: user{i:05}
cn: User {i}
sn: Number{i}
givenName: User
mail: user{i:05}@example.com
employeeNumber: {i}
description: Member of staff, number {i}
telephoneNumber: +1 555 {i:07}
",
            dn = user_dn(i)
        ));
        if i % 2 == 0 {
            out.push_str(&format!("telephoneNumber: +1 666 {i:07}\n"));
        }
        if i % 5 == 0 {
            out.push_str(&format!("jpegPhoto:: {}\n", b64.encode(photo_of(i))));
        }
        out.push('\n');
    }
    let per_group = members_per_group.min(n);
    for g in 0..groups {
        out.push_str(&format!(
            "dn: {dn}
objectClass: top
objectClass: groupOfNames
cn: group{g:04}
description: Group {g}
",
            dn = group_dn(g)
        ));
        if per_group == 0 {
            out.push_str(&format!("member: {ADMIN_DN}\n"));
        }
        for j in 0..per_group {
            out.push_str(&format!(
                "member: {}\n",
                user_dn((g * members_per_group + j) % n)
            ));
        }
        out.push('\n');
    }
    out
}
