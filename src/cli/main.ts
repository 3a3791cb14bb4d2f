export async function main(argv: readonly string[]): Promise<number> {
  console.log('ward', argv);
  return 0;
}
