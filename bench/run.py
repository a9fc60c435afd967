#!/usr/bin/env python3
"""Side-by-side benchmarks: connagent against the reference tools, on the same machine, in the
same run, on the same data; writes the figures to BENCHMARKS.md.

  PostgreSQL: `connagent export` vs `psql -c "\\copy (SELECT ...) TO 'file' CSV HEADER"`
              narrow rows at two sizes (memory must not grow with rows) and awkward rows
              (quotes, separators, line breaks, unicode, NULLs and empty strings).
  LDAP:       `connagent export` vs paged `ldapsearch` to a file (when slapd is installed and the
              build has the Ldap package).
  SQL Server: `connagent export` vs a bare tiberius loop (examples/tiberius-bare.rs), both reading
              from the TDS responder (examples/tds-responder.rs): 1M narrow rows, 200k wide rows.

Each case records wall time, CPU time and peak RSS of each tool (bench/measure.py, under GNU time),
the ratio connagent / reference, and whether both outputs hold the same values.

Usage: python3 bench/run.py [--narrow 100000,1000000] [--awkward 200000] [--ldap 100000]
                            [--mssql-narrow 1000000] [--mssql-wide 200000]
"""
import argparse
import csv
import datetime
import json
import os
import pathlib
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "connagent"
MEASURE = [sys.executable, str(ROOT / "bench" / "measure.py"), "--"]
csv.field_size_limit(1 << 30)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(cmd, env=None):
    out = subprocess.run(MEASURE + cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"benchmark command failed: {' '.join(cmd)}\n{out.stderr}")
    return json.loads(out.stdout)


class Postgres:
    def __init__(self):
        versions = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not versions:
            sys.exit("PostgreSQL is needed: apt-get install postgresql")
        self.bin = versions[-1].parent
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="connagent-bench-pg-"))
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            subprocess.run(["chown", "-R", "postgres:postgres", str(self.dir)], check=True)
        self.port = free_port()
        self.run("initdb", "-D", str(self.dir / "data"), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C")
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c shared_buffers=256MB"
        self.run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-o", opts, "start")

    def run(self, tool, *args):
        cmd = [str(self.bin / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.dir)

    def psql_cmd(self, sql):
        cmd = [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "bench", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]
        return cmd

    def sql(self, sql, db="bench"):
        cmd = self.psql_cmd(sql)
        cmd[cmd.index("bench")] = db
        subprocess.run(cmd, check=True, capture_output=True)

    def stop(self):
        self.run("pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def same_values(a, b):
    """Both CSV files hold the same rows (read with Python's csv module)."""
    with open(a, newline="", encoding="utf-8") as fa, open(b, newline="", encoding="utf-8") as fb:
        ra, rb = csv.reader(fa), csv.reader(fb)
        for x, y in zip(ra, rb):
            if x != y:
                return False
        return next(ra, None) is None and next(rb, None) is None


def agent_setup(work, connection, package, settings, xml_extra=""):
    (work / "xml-config").mkdir(parents=True, exist_ok=True)
    (work / "xml-config" / "c.xml").write_text(
        '<ConfigurationFile><Connector Identifier="B" DisplayName_L1="b"/>'
        f'<Connection Identifier="{connection}" DisplayName_L1="x" Connector="B" Package="{package}"/>{xml_extra}</ConfigurationFile>'
    )
    (work / "appsettings.agent.json").write_text(json.dumps({"Connections": {connection: settings}}))
    return [str(BIN), "--settings", str(work / "appsettings.agent.json"), "export", "--connection", connection, "--complete"]


def pg_cases(args, results):
    pg = Postgres()
    try:
        pg.sql("CREATE DATABASE bench", db="postgres")
        cases = []
        for n in args.narrow:
            t = f"narrow_{n}"
            pg.sql(f"CREATE TABLE {t} AS SELECT g AS id, 'user' || g AS login, md5(g::text) AS hash, g % 97 AS dept FROM generate_series(1, {n}) g")
            cases.append((f"PostgreSQL narrow, {n:,} rows", f"SELECT id, login, hash, dept FROM {t} ORDER BY id"))
        for n in args.awkward:
            t = f"awkward_{n}"
            pg.sql(
                f"""CREATE TABLE {t} AS SELECT g AS id,
                  CASE WHEN g % 10 = 0 THEN NULL WHEN g % 10 = 1 THEN '' ELSE 'Zoë "' || g || '", 李, O''Brien' END AS name,
                  CASE WHEN g % 3 = 0 THEN E'line one\\nline two; x' ELSE 'plain ' || g END AS note,
                  repeat('é', g % 20) AS padding FROM generate_series(1, {n}) g"""
            )
            cases.append((f"PostgreSQL awkward, {n:,} rows", f"SELECT id, name, note, padding FROM {t} ORDER BY id"))
        for label, query in cases:
            work = pathlib.Path(tempfile.mkdtemp(prefix="connagent-bench-"))
            url = f"postgresql://postgres@127.0.0.1:{pg.port}/bench?sslmode=disable"
            cmd = agent_setup(work, "Pg", "PostgreSql", {"ConnectionString": url, "SqlCommand": query})
            ours = measure(cmd)
            ref_file = work / "psql.csv"
            ref = measure(pg.psql_cmd(f"\\copy ({query}) TO '{ref_file}' CSV HEADER"))
            equal = same_values(work / "Temp" / "ExportOutput" / "Pg.csv", ref_file)
            results.append({"case": label, "reference": "psql \\copy", "ours": ours, "ref": ref, "same_values": equal})
            print(label, ours, ref, "same values" if equal else "DIFFERENT VALUES", flush=True)
            shutil.rmtree(work, ignore_errors=True)
    finally:
        pg.stop()


LDAP_BASE = "dc=example,dc=com"
LDAP_ADMIN = "cn=admin,dc=example,dc=com"
LDAP_PASSWORD = "bench-admin-password"


class Slapd:
    """A throw-away slapd (the same configuration as tests/support/slapd.rs)."""

    def __init__(self, people, groups, members):
        for tool in ("/usr/sbin/slapd", "/usr/sbin/slapadd"):
            if not os.path.exists(tool):
                sys.exit("OpenLDAP is needed: apt-get install slapd ldap-utils")
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="connagent-bench-ldap-"))
        conf, data = self.dir / "slapd.d", self.dir / "data"
        conf.mkdir()
        data.mkdir()
        module = ""
        if os.path.exists("/usr/lib/ldap/back_mdb.so") or os.path.exists("/usr/lib/ldap/back_mdb.la"):
            module = "dn: cn=module{0},cn=config\nobjectClass: olcModuleList\ncn: module{0}\nolcModulePath: /usr/lib/ldap\nolcModuleLoad: back_mdb\n\n"
        schemas = "".join(f"include: file:///etc/ldap/schema/{x}.ldif\n" for x in ("core", "cosine", "nis", "inetorgperson"))
        config = (
            f"dn: cn=config\nobjectClass: olcGlobal\ncn: config\nolcPidFile: {self.dir}/slapd.pid\nolcLogLevel: none\n\n"
            + module
            + "dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n" + schemas + "\n"
            + "dn: olcDatabase={-1}frontend,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcFrontendConfig\n"
            + "olcDatabase: {-1}frontend\nolcSizeLimit: 500\n\n"
            + "dn: olcDatabase={0}config,cn=config\nobjectClass: olcDatabaseConfig\nolcDatabase: {0}config\nolcAccess: {0}to * by * none\n\n"
            + f"dn: olcDatabase={{1}}mdb,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcMdbConfig\nolcDatabase: {{1}}mdb\n"
            + f"olcDbDirectory: {data}\nolcSuffix: {LDAP_BASE}\nolcRootDN: {LDAP_ADMIN}\nolcRootPW: {LDAP_PASSWORD}\n"
            + "olcDbMaxSize: 4294967296\nolcSizeLimit: 500\n"
        )
        (self.dir / "config.ldif").write_text(config)
        subprocess.run(["/usr/sbin/slapadd", "-n", "0", "-F", str(conf), "-l", str(self.dir / "config.ldif")], check=True, capture_output=True)
        with open(self.dir / "data.ldif", "w") as f:
            f.write(f"dn: {LDAP_BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n")
            f.write(f"dn: ou=people,{LDAP_BASE}\nobjectClass: organizationalUnit\nou: people\n\n")
            f.write(f"dn: ou=groups,{LDAP_BASE}\nobjectClass: organizationalUnit\nou: groups\n\n")
            for i in range(people):
                f.write(
                    f"dn: uid=user{i:06},ou=people,{LDAP_BASE}\nobjectClass: inetOrgPerson\nuid: user{i:06}\n"
                    f"cn: User {i}\nsn: Number{i}\nmail: user{i:06}@example.com\n"
                    f"description: Member of staff, number {i}\ntelephoneNumber: +1 555 {i:07}\n"
                    + (f"telephoneNumber: +1 666 {i:07}\n" if i % 2 == 0 else "") + "\n"
                )
            for g in range(groups):
                f.write(f"dn: cn=group{g:04},ou=groups,{LDAP_BASE}\nobjectClass: groupOfNames\ncn: group{g:04}\n")
                for j in range(min(members, people)):
                    f.write(f"member: uid=user{(g * members + j) % people:06},ou=people,{LDAP_BASE}\n")
                f.write("\n")
        subprocess.run(["/usr/sbin/slapadd", "-q", "-n", "1", "-F", str(conf), "-l", str(self.dir / "data.ldif")], check=True, capture_output=True)
        self.port = free_port()
        self.proc = subprocess.Popen(["/usr/sbin/slapd", "-d", "0", "-h", f"ldap://127.0.0.1:{self.port}/", "-F", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("slapd did not start")
                time.sleep(0.1)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def ldif_entries(path):
    """dn -> {attribute (lower-case): [values]} from ldapsearch output (continuations, base64)."""
    import base64
    entries, cur, last = {}, None, None
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith(" ") and lines:
                lines[-1] += line[1:]
            else:
                lines.append(line)
    for line in lines + [""]:
        if not line:
            if cur is not None:
                entries[cur["dn"][0]] = cur
            cur = None
            continue
        if line.startswith("#") or line.startswith("search:") or line.startswith("result:") or line.startswith("control:"):
            continue
        if ":: " in line:
            k, v = line.split(":: ", 1)
            v = base64.b64decode(v).decode("utf-8", "replace")
        elif ": " in line:
            k, v = line.split(": ", 1)
        else:
            continue
        if k == "dn":
            cur = {"dn": [v]}
        elif cur is not None:
            cur.setdefault(k.lower(), []).append(v)
    return entries


def ldap_cases(args, results):
    attrs = ["uid", "cn", "mail", "telephoneNumber", "description"]
    for n in args.ldap:
        sl = Slapd(n, max(1, n // 1000), 200)
        try:
            work = pathlib.Path(tempfile.mkdtemp(prefix="connagent-bench-"))
            settings = {
                "Servers": [{"Server": f"ldap://127.0.0.1:{sl.port}", "AuthType": "Basic", "Login": LDAP_ADMIN}],
                "Password": LDAP_PASSWORD,
                "Tables": [{"Table": "entries", "BaseDN": f"ou=people,{LDAP_BASE}", "Filter": "(objectClass=inetOrgPerson)"}],
                "Attributes": attrs,
                "PageSize": 500,
            }
            cmd = agent_setup(work, "Dir", "Ldap", settings)
            ours = measure(cmd)
            ref_file = work / "ldapsearch.ldif"
            ref = measure(["sh", "-c", f"ldapsearch -LLL -o ldif-wrap=no -x -H ldap://127.0.0.1:{sl.port} -D '{LDAP_ADMIN}' -w '{LDAP_PASSWORD}' "
                                       f"-b 'ou=people,{LDAP_BASE}' -E pr=500/noprompt '(objectClass=inetOrgPerson)' {' '.join(attrs)} > {ref_file}"])
            theirs = ldif_entries(ref_file)
            equal = True
            count = 0
            with open(work / "Temp" / "ExportOutput" / "Dir_entries.csv", newline="", encoding="utf-8") as f:
                r = csv.reader(f)
                header = next(r)
                for row in r:
                    count += 1
                    e = theirs.get(row[0])
                    if e is None:
                        equal = False
                        break
                    for k, v in zip(header[2:], row[2:]):
                        if "\n".join(e.get(k.lower(), [])) != v:
                            equal = False
                equal = equal and count == len(theirs)
            label = f"LDAP entries, {n:,} inetOrgPerson"
            results.append({"case": label, "reference": "ldapsearch (paged)", "ours": ours, "ref": ref, "same_values": equal})
            print(label, ours, ref, "same values" if equal else "DIFFERENT VALUES", flush=True)
            shutil.rmtree(work, ignore_errors=True)
        finally:
            sl.stop()


class Responder:
    """The TDS responder of the tests, as a process (examples/tds-responder.rs)."""

    def __init__(self, rows, wide):
        exe = ROOT / "target" / "release" / "examples" / "tds-responder"
        cmd = [str(exe), "--rows", str(rows)] + (["--wide"] if wide else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "PORT":
            self.proc.kill()
            sys.exit(f"the TDS responder did not say its port: {line}")
        self.port = int(line[1])

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def count_csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def sqlserver_cases(args, results):
    bare = ROOT / "target" / "release" / "examples" / "tiberius-bare"
    cases = [(f"SQL Server narrow, {n:,} rows", n, False, "SELECT * FROM dbo.people") for n in args.mssql_narrow]
    cases += [(f"SQL Server wide (30 columns), {n:,} rows", n, True, "SELECT * FROM dbo.wide") for n in args.mssql_wide]
    for label, n, wide, query in cases:
        resp = Responder(n, wide)
        try:
            work = pathlib.Path(tempfile.mkdtemp(prefix="connagent-bench-"))
            cs = f"Server=tcp:127.0.0.1,{resp.port};Database=bench;User ID=bench;Password=bench-pass;Encrypt=false;TrustServerCertificate=true"
            cmd = agent_setup(work, "Mssql", "SqlServer", {"ConnectionString": cs, "SqlCommand": query})
            ours = measure(cmd)
            ref = measure([str(bare), "--port", str(resp.port), "--query", query])
            got = count_csv_rows(work / "Temp" / "ExportOutput" / "Mssql.csv")
            equal = got == n
            results.append({"case": label, "reference": "bare tiberius loop", "ours": ours, "ref": ref, "same_values": equal})
            print(label, ours, ref, f"{got} rows" , flush=True)
            shutil.rmtree(work, ignore_errors=True)
        finally:
            resp.stop()


def write_report(results, args):
    lines = [
        "# Benchmarks",
        "",
        "Side by side on the same machine, in the same run, on the same data. Reproduce with:",
        "",
        "```sh",
        "python3 bench/run.py " + " ".join(sys.argv[1:]),
        "```",
        "",
        f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}; connagent release build. Wall and CPU in seconds, "
        "peak RSS of the client process (the server's own memory is not counted for either tool). "
        "Ratio = connagent / reference (below 1.0: connagent is faster or smaller).",
        "",
        "| case | reference | connagent wall | reference wall | wall ratio | connagent CPU | reference CPU | connagent peak RSS | reference peak RSS | same values |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        o, f = r["ours"], r["ref"]
        ratio = o["wall_s"] / f["wall_s"] if f["wall_s"] else float("nan")
        lines.append(
            f"| {r['case']} | {r['reference']} | {o['wall_s']:.2f} | {f['wall_s']:.2f} | {ratio:.2f} | {o['cpu_s']:.2f} | {f['cpu_s']:.2f} | "
            f"{o['max_rss_kib'] / 1024:.1f} MiB | {f['max_rss_kib'] / 1024:.1f} MiB | {'yes' if r['same_values'] else 'NO'} |"
        )
    lines += [
        "",
        "Targets we are driving toward: PostgreSQL export within 1.1x of `psql \\copy`, LDAP within 1.2x of "
        "`ldapsearch`, peak RSS under 64 MiB at any size. Where a ratio is above its target, the target is not met yet. "
        "SQL Server: no real server can run here, so both tools read from the TDS responder of the tests "
        "(examples/tds-responder.rs, on the same machine); the reference is a bare tiberius loop that reads "
        "and discards every row, so the ratio is connagent's overhead over the driver itself (texts, CSV, "
        "atomic publish), and 'same values' means the CSV holds every row.",
        "",
    ]
    # Observations written by hand about how runs vary and what the figures mean stay in
    # bench/NOTES.md, and are carried into every report.
    notes = ROOT / "bench" / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--narrow", default="100000,1000000")
    p.add_argument("--awkward", default="200000")
    p.add_argument("--ldap", default="10000,100000")
    p.add_argument("--mssql-narrow", default="100000,1000000")
    p.add_argument("--mssql-wide", default="200000")
    p.add_argument("--no-build", action="store_true")
    args = p.parse_args()
    args.narrow = [int(x) for x in args.narrow.split(",") if x]
    args.awkward = [int(x) for x in args.awkward.split(",") if x]
    args.ldap = [int(x) for x in args.ldap.split(",") if x]
    args.mssql_narrow = [int(x) for x in args.mssql_narrow.split(",") if x]
    args.mssql_wide = [int(x) for x in args.mssql_wide.split(",") if x]
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "connagent", "--example", "tds-responder", "--example", "tiberius-bare"], cwd=ROOT, check=True)
    results = []
    pg_cases(args, results)
    if args.ldap:
        ldap_cases(args, results)
    if args.mssql_narrow or args.mssql_wide:
        sqlserver_cases(args, results)
    write_report(results, args)
    print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
