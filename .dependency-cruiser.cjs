/** Import rules: no cycles; stages do not import each other sideways (STYLE.md). */
module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', from: {}, to: { circular: true } },
    {
      name: 'lib-is-domain-free',
      severity: 'error',
      from: { path: '^src/lib/' },
      to: { path: '^src/(?!lib/|errors/)' },
    },
    {
      name: 'only-cli-reaches-everything',
      comment: 'Stages may use lib/, errors/, config/ and the policy domain types; wiring happens in stack.ts and cli/.',
      severity: 'error',
      from: { path: '^src/(authn|policy|devidp)/' },
      to: { path: '^src/(inbound|cli)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
