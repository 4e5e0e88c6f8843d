// Drives the YAML language server over stdio as an editor does: opens a flow file that
// points at schemas/flow.schema.json through its modeline, asks for completion inside an
// empty node and for hover on a key, and collects the diagnostics. Exits 1 when the
// server does not offer every node kind, flag the mistakes or show the docs.
// Run: cd scripts/editor-check && npm install && npm run check
const { spawn } = require('child_process');
const rpc = require('vscode-jsonrpc/node');
const fs = require('fs');
const os = require('os');
const path = require('path');

const repo = path.resolve(__dirname, '../..');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'parlance-editor-'));
const file = path.join(dir, 'main.yaml');
const schema = path.join(repo, 'schemas/flow.schema.json');
fs.writeFileSync(file, [
  `# yaml-language-server: $schema=${schema}`,
  'nodes:',
  '  welcome:',
  '    buttons:',
  '      body: "Hi"',
  '      buttons:',
  '        - { id: a, title: A }',
  '    sav: topic',
  '  second:',
  '    ',
  '  third:',
  '    ask:',
  '      text: "How old?"',
  '      expect: numbr',
  '',
].join('\n'));

const kinds = JSON.parse(fs.readFileSync(schema, 'utf8')).definitions.Node.then.oneOf.map((b) => b.required[0]);
const server = spawn(process.execPath, [require.resolve('yaml-language-server/bin/yaml-language-server'), '--stdio']);
const conn = rpc.createMessageConnection(new rpc.StreamMessageReader(server.stdout), new rpc.StreamMessageWriter(server.stdin));
const uri = 'file://' + file;
let diagnostics = [];
conn.onNotification('textDocument/publishDiagnostics', (p) => { if (p.uri === uri) diagnostics = p.diagnostics; });
conn.onRequest('workspace/configuration', (p) => p.items.map(() => ({ validate: true, completion: true, hover: true, schemaStore: { enable: false } })));
conn.onRequest('client/registerCapability', () => null);
conn.onRequest('window/workDoneProgress/create', () => null);
conn.listen();

const failures = [];
const expect = (ok, what) => { console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`); if (!ok) failures.push(what); };

(async () => {
  await conn.sendRequest('initialize', { processId: process.pid, rootUri: 'file://' + dir, capabilities: { textDocument: { completion: { completionItem: { snippetSupport: true } }, hover: { contentFormat: ['plaintext'] } }, workspace: { configuration: true } } });
  conn.sendNotification('initialized', {});
  conn.sendNotification('workspace/didChangeConfiguration', { settings: { yaml: { validate: true, completion: true, hover: true, schemaStore: { enable: false } } } });
  conn.sendNotification('textDocument/didOpen', { textDocument: { uri, languageId: 'yaml', version: 1, text: fs.readFileSync(file, 'utf8') } });
  await new Promise((r) => setTimeout(r, 3000));

  const completion = await conn.sendRequest('textDocument/completion', { textDocument: { uri }, position: { line: 9, character: 4 } });
  const labels = (completion.items || completion).map((i) => i.label);
  const missing = kinds.filter((k) => !labels.includes(k));
  expect(missing.length === 0, `completion in an empty node offers all ${kinds.length} node kinds${missing.length ? ' (missing: ' + missing.join(', ') + ')' : ''}`);
  expect(['next', 'save', 'on_error'].every((k) => labels.includes(k)), 'completion offers next, save, on_error');

  const hover = await conn.sendRequest('textDocument/hover', { textDocument: { uri }, position: { line: 3, character: 6 } });
  const hoverText = JSON.stringify(hover && hover.contents) || '';
  expect(hoverText.includes('reply buttons'), 'hover on `buttons` shows its description');

  const messages = diagnostics.map((d) => `${d.range.start.line + 1}:${d.range.start.character + 1} ${d.message}`);
  console.log(messages.map((m) => '     ' + m).join('\n'));
  expect(messages.some((m) => m.startsWith('8:') && m.includes('sav')), 'the unknown key `sav` is flagged on line 8');
  expect(messages.some((m) => m.startsWith('14:') && m.includes('yes_no')), 'the bad `expect` value is flagged with the allowed values');

  server.kill();
  process.exit(failures.length ? 1 : 0);
})().catch((e) => { console.error(e); server.kill(); process.exit(1); });
