// Parses an AsyncAPI document with the official parser (@asyncapi/parser) and prints a JSON verdict.
// Usage: NODE_PATH=<node_modules> node tests/asyncapi_parse.cjs asyncapi.json
const { Parser } = require('@asyncapi/parser');
const fs = require('fs');

new Parser().parse(fs.readFileSync(process.argv[2], 'utf8')).then(({ document, diagnostics }) => {
  const errors = diagnostics.filter((d) => d.severity === 0).map((d) => `${d.path.join('/')}: ${d.message}`);
  console.log(JSON.stringify({
    valid: Boolean(document) && errors.length === 0,
    errors,
    warnings: diagnostics.filter((d) => d.severity === 1).map((d) => `${d.path.join('/')}: ${d.message}`),
    channels: document ? document.channels().length : 0,
    operations: document ? document.operations().length : 0,
  }));
});
