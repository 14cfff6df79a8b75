#!/usr/bin/env node
// Lints every Neo4j-dialect query of lesiondb with Neo4j's own Cypher parser and semantic
// analysis (@neo4j-cypher/language-support, `lintCypherQuery`). No Neo4j server is needed.
//
// What is linted, mirroring lesiondb/queries.py for the neo4j engine:
//   - for each query name, the file Neo4j would run: neo4j/NAME.cypher, else core/NAME.cypher;
//   - the plug-in queries in neo4j/gds/ (Graph Data Science);
//   - every core/schema/*.cypher and neo4j/schema/*.cypher statement.
//
// The database schema handed to the linter:
//   - parameters: exactly those declared in the file's header (`// params: a: TYPE, ...`), so a
//     `$param` used but not declared is an error; a declared parameter the body never uses is an
//     error too (checked here: the library does not);
//   - functions and procedures: Neo4j's catalogue as shipped with the library (built-in functions,
//     db.* / dbms.* / tx.* procedures; no APOC or GDS), so a misspelt or FalkorDB-only function
//     (`vecf32`, `db.idx.vector.queryNodes`) is an error; a file whose header says
//     `// requires: gds` also gets the gds.* functions and procedures of a server with the plug-in;
//   - labels and relationship types: those some query writes (CREATE/MERGE) or the schema declares,
//     so a MATCH on a label nothing ever writes (a typo) is reported;
//   - property keys: the library does not check them (a typo in a property name is not caught).
//
// Exit status: 0 clean; 1 on any error, any deprecation, or any unknown label / relationship
// type; 2 on bad usage or a missing `npm ci`. Other warnings (e.g. a cartesian product of two
// index lookups) are printed but pass, unless --strict. Output: `file:line:col: severity: message`.
//
// Usage: node lint.mjs [--root CYPHER_DIR] [--strict] [--json] [--quiet]

import { readdirSync, readFileSync, existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

// The package's ESM build has extensionless imports Node cannot resolve; its CommonJS build works.
const require = createRequire(import.meta.url);
let cypher; // loaded in main(), after the arguments are checked (loading takes seconds)

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CYPHER_VERSION = 'CYPHER 5'; // Neo4j 5 (docker-compose.yml, CI's neo4j:5-community)
const SEVERITY = { 1: 'error', 2: 'warning', 3: 'info', 4: 'hint' };
const DEPRECATED_TAG = 2; // vscode-languageserver DiagnosticTag.Deprecated

const SCALAR_TYPES = new Set([
  'ANY', 'BOOLEAN', 'STRING', 'INTEGER', 'FLOAT', 'NUMBER', 'MAP', 'NULL', 'DATE', 'DATETIME',
  'LOCAL DATETIME', 'LOCAL TIME', 'TIME', 'ZONED DATETIME', 'ZONED TIME', 'DURATION', 'POINT',
  'NODE', 'RELATIONSHIP', 'PATH',
]);

function usage(msg) {
  if (msg) process.stderr.write(`lint.mjs: ${msg}\n`);
  process.stderr.write('usage: node lint.mjs [--root CYPHER_DIR] [--strict] [--json] [--quiet]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { root: path.resolve(HERE, '..', '..', 'cypher'), strict: false, json: false, quiet: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--root') {
      if (i + 1 >= argv.length) usage('--root needs a directory');
      opts.root = path.resolve(argv[++i]);
    } else if (a.startsWith('--root=')) opts.root = path.resolve(a.slice('--root='.length));
    else if (a === '--strict') opts.strict = true;
    else if (a === '--json') opts.json = true;
    else if (a === '--quiet' || a === '-q') opts.quiet = true;
    else if (a === '--help' || a === '-h') {
      process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8')
        .split('\n').filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n') + '\n');
      process.exit(0);
    } else usage(`unknown argument ${a}`);
  }
  return opts;
}

// -- header parsing (same rules as lesiondb/queries.py) -----------------------------------------
function parseHeader(text) {
  const meta = {};
  for (const line of text.split(/\r?\n/)) {
    if (!line.startsWith('//')) break;
    const m = /^\/\/\s*(\w+)\s*:\s*(.*)$/.exec(line);
    if (m && ['name', 'params', 'returns', 'idempotent', 'requires'].includes(m[1])) meta[m[1]] = m[2].trim();
  }
  return meta;
}

function splitTopLevel(raw, sep) {
  const out = [];
  let depth = 0;
  let cur = '';
  for (const ch of raw) {
    if ('<([{'.includes(ch)) depth++;
    else if ('>)]}'.includes(ch)) depth--;
    if (ch === sep && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (cur.trim()) out.push(cur);
  return out.map((p) => p.trim()).filter(Boolean);
}

function validType(t) {
  const parts = splitTopLevel(t.toUpperCase().replace(/\s+/g, ' ').trim(), '|');
  if (!parts.length) return false;
  return parts.every((p) => {
    const list = /^LIST\s*<(.*)>$/.exec(p);
    return list ? validType(list[1]) : SCALAR_TYPES.has(p);
  });
}

function sampleValue(t) {
  const u = t.toUpperCase().trim();
  if (u.startsWith('LIST')) return [];
  if (u === 'STRING') return '';
  if (u === 'INTEGER' || u === 'FLOAT' || u === 'NUMBER') return 0;
  if (u === 'BOOLEAN') return false;
  if (u === 'MAP') return {};
  return null;
}

/** {params: {name: TYPE}, problems: [message]} from the `// params:` header line. */
function declaredParams(meta) {
  const problems = [];
  const params = {};
  if (meta.params === undefined) {
    problems.push("header has no '// params:' line (write '// params: none' if there are none)");
    return { params, problems };
  }
  const raw = meta.params.trim();
  if (!raw || raw.toLowerCase() === 'none') return { params, problems };
  for (const part of splitTopLevel(raw, ',')) {
    const idx = part.indexOf(':');
    const name = (idx < 0 ? part : part.slice(0, idx)).trim().replace(/^\$/, '');
    const type = idx < 0 ? '' : part.slice(idx + 1).trim();
    if (!/^\w+$/.test(name)) problems.push(`header parameter '${part}' is not 'name: TYPE'`);
    else if (!type) problems.push(`header parameter ${name} has no type ('${name}: STRING', ...)`);
    else if (!validType(type)) problems.push(`header parameter ${name} has unknown type '${type}'`);
    if (name in params) problems.push(`header declares parameter ${name} twice`);
    params[name] = type || 'ANY';
  }
  return { params, problems };
}

// -- which files Neo4j runs ---------------------------------------------------------------------
function cypherFiles(dir) {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) return [];
  return readdirSync(dir).filter((f) => f.endsWith('.cypher')).sort().map((f) => path.join(dir, f));
}

function neo4jQueryFiles(root) {
  const byName = new Map();
  const problems = [];
  for (const folder of ['core', 'neo4j']) {
    const seen = new Map();
    const plugins = folder === 'neo4j' ? cypherFiles(path.join(root, folder, 'gds')) : [];
    for (const file of [...cypherFiles(path.join(root, folder)), ...plugins]) {
      const name = parseHeader(readFileSync(file, 'utf8')).name || path.basename(file, '.cypher');
      if (seen.has(name)) {
        problems.push({ file, line: 1, col: 1, severity: 'error',
          message: `duplicate query name '${name}' (also in ${seen.get(name)})` });
      }
      seen.set(name, file);
      byName.set(name, file); // neo4j/ is read after core/: its variant wins
    }
  }
  const schema = ['core', 'neo4j'].flatMap((f) => cypherFiles(path.join(root, f, 'schema')));
  return { files: [...byName.values(), ...schema].sort(), problems };
}

// -- the catalogue of functions and procedures --------------------------------------------------
function neo4jCatalogue() {
  // testData.mockSchema is the catalogue of a real Neo4j server, exported by the library for its
  // own tests; keep what a Neo4j 5 community server has: built-in functions and db/dbms/tx procedures.
  const mock = cypher.testData?.mockSchema;
  const fns = mock?.functions?.[CYPHER_VERSION];
  const procs = mock?.procedures?.[CYPHER_VERSION];
  if (!fns || !procs) {
    throw new Error('@neo4j-cypher/language-support no longer ships testData.mockSchema; '
      + 'update tools/cypher-lint/lint.mjs for the pinned version');
  }
  const pick = (gds) => {
    const functions = Object.fromEntries(Object.entries(fns)
      .filter(([name, f]) => f.isBuiltIn || (gds && name.startsWith('gds.'))));
    const procedures = Object.fromEntries(Object.entries(procs)
      .filter(([name]) => /^(db|dbms|tx)\./.test(name) || (gds && name.startsWith('gds.'))));
    return { functions: { [CYPHER_VERSION]: functions }, procedures: { [CYPHER_VERSION]: procedures } };
  };
  return { plain: pick(false), gds: pick(true) };
}

/** Labels and relationship types that some query writes or the schema declares. */
function declaredTokens(files) {
  const labels = new Set();
  const relTypes = new Set();
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    for (const st of cypher.parserWrapper.parse(text).statementsParsing) {
      for (const t of st.collectedLabelOrRelTypes ?? []) {
        if (!t.couldCreateNewLabel) continue;
        const name = t.labelText.replace(/^`|`$/g, '');
        (t.labelType === 'Relationship type' ? relTypes : labels).add(name);
      }
    }
    // Schema DDL: FOR (n:Label) ... / FOR ()-[r:TYPE]-() ...
    for (const m of text.matchAll(/\bFOR\s*\(\s*\w*\s*:\s*`?(\w+)`?\s*\)/gi)) labels.add(m[1]);
    for (const m of text.matchAll(/\bFOR\s*\(\s*\)\s*-\s*\[\s*\w*\s*:\s*`?(\w+)`?\s*\]/gi)) relTypes.add(m[1]);
  }
  return { labels: [...labels].sort(), relationshipTypes: [...relTypes].sort() };
}

// -- linting one file ---------------------------------------------------------------------------
function lintFile(file, catalogues, tokens) {
  const text = readFileSync(file, 'utf8');
  const out = [];
  const add = (line, col, severity, message, deprecated = false) => out.push({
    file, line, col, severity, message, deprecated,
    unknownToken: /^(Label|Relationship type) .* is not present in the database/.test(message),
  });

  const meta = parseHeader(text);
  if (!meta.name) add(1, 1, 'error', "header has no '// name:' line");
  if (meta.requires && meta.requires !== 'gds') add(1, 1, 'error', `unknown plug-in '${meta.requires}' in '// requires:'`);
  const catalogue = meta.requires === 'gds' ? catalogues.gds : catalogues.plain;
  const paramsLine = text.split(/\r?\n/).findIndex((l) => /^\/\/\s*params\s*:/.test(l)) + 1 || 1;
  const { params, problems } = declaredParams(meta);
  for (const p of problems) add(paramsLine, 1, 'error', p);

  const statements = cypher.parserWrapper.parse(text).statementsParsing
    .filter((s) => s.command.type !== 'cypher' || s.command.statement.trim().length > 0);
  if (statements.length === 0) add(1, 1, 'error', 'no Cypher statement in this file');
  if (statements.length > 1) {
    add(1, 1, 'error', `${statements.length} statements in one file: lesiondb runs one statement per .cypher file`);
  }

  const parameters = Object.fromEntries(Object.entries(params).map(([k, t]) => [k, sampleValue(t)]));
  const dbSchema = { ...catalogue, ...tokens, parameters, defaultLanguage: CYPHER_VERSION };
  for (const d of cypher.lintCypherQuery(text, dbSchema, false)) {
    const deprecated = (d.tags ?? []).includes(DEPRECATED_TAG) || /deprecat/i.test(d.message);
    add(d.range.start.line + 1, d.range.start.character + 1, SEVERITY[d.severity] ?? 'error', d.message, deprecated);
  }

  const used = new Set(statements.flatMap((s) => (s.collectedParameters ?? [])
    .map((p) => p.name.replace(/^`|`$/g, ''))));
  for (const name of Object.keys(params)) {
    if (!used.has(name)) add(paramsLine, 1, 'error', `parameter $${name} is declared in the header but never used`);
  }
  return out.sort((a, b) => a.line - b.line || a.col - b.col);
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (!existsSync(opts.root) || !statSync(opts.root).isDirectory()) usage(`--root ${opts.root} is not a directory`);
  const { files, problems } = neo4jQueryFiles(opts.root);
  if (files.length === 0) usage(`no .cypher files under ${opts.root}/{core,neo4j}`);

  try {
    cypher = require('@neo4j-cypher/language-support');
  } catch (err) {
    process.stderr.write(`lint.mjs: cannot load @neo4j-cypher/language-support (${err.code ?? err.message}); `
      + `run \`npm ci\` in ${HERE}\n`);
    process.exit(2);
  }
  const catalogues = neo4jCatalogue();
  // Canary: the semantic analysis swallows its own exceptions; make sure it is alive at all.
  const canary = cypher.lintCypherQuery('MATCH (n) RETURN undefinedVariable', { ...catalogues.plain, parameters: {} }, false);
  if (!canary.some((d) => /not defined/.test(d.message))) {
    throw new Error('the Cypher semantic analysis did not run (canary query passed); check the library version');
  }
  const tokens = declaredTokens(files);
  const findings = [...problems, ...files.flatMap((f) => lintFile(f, catalogues, tokens))];

  const failing = (f) => f.severity === 'error' || f.deprecated || f.unknownToken || opts.strict;
  const nFail = findings.filter(failing).length;
  const rel = (f) => {
    const r = path.relative(process.cwd(), f);
    return r && !r.startsWith('..') && !path.isAbsolute(r) ? r : f;
  };
  if (opts.json) {
    process.stdout.write(JSON.stringify({
      root: opts.root, files: files.map(rel), failures: nFail,
      findings: findings.map((f) => ({ ...f, file: rel(f.file), fails: failing(f) })),
    }, null, 2) + '\n');
  } else {
    for (const f of findings) {
      const kind = f.deprecated ? ' (deprecation)' : f.unknownToken ? ' (unknown name)' : '';
      process.stdout.write(`${rel(f.file)}:${f.line}:${f.col}: ${f.severity}${kind}: ${f.message}\n`);
    }
    if (!opts.quiet) {
      process.stderr.write(`cypher-lint: ${files.length} Neo4j-dialect files under ${rel(opts.root)}, `
        + `${findings.length} finding(s), ${nFail} failing\n`);
    }
  }
  process.exitCode = nFail > 0 ? 1 : 0; // not process.exit(): let piped stdout drain
}

main();
