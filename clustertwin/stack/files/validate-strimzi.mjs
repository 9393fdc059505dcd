// Validate Strimzi resources (a JSON array on stdin) against the published schemas of
// @kubernetes-models/strimzi-kafka-operator (generated from Strimzi's CRDs).
// argv: <install dir of the package> <apiVersion>. Prints one line per invalid resource;
// exit 1 when any is invalid, 0 when all are valid, 2 on a usage error.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [home, apiVersion] = process.argv.slice(2);
if (!home || !apiVersion) {
  console.error("usage: validate-strimzi.mjs <models dir> <apiVersion>");
  process.exit(2);
}
const version = apiVersion.split("/")[1];
const base = join(home, "node_modules", "@kubernetes-models", "strimzi-kafka-operator");
const docs = JSON.parse(readFileSync(0, "utf8"));
let invalid = 0;
for (const doc of docs) {
  const where = `${doc.kind}/${doc.metadata?.name}`;
  if (doc.apiVersion !== apiVersion) {
    console.log(`${where}: apiVersion ${doc.apiVersion}, expected ${apiVersion}`);
    invalid++;
    continue;
  }
  let Model;
  try {
    const url = pathToFileURL(join(base, "kafka.strimzi.io", version, `${doc.kind}.js`));
    Model = (await import(url.href))[doc.kind];
  } catch (e) {
    console.log(`${where}: no schema for kind ${doc.kind} (${e.message})`);
    invalid++;
    continue;
  }
  try {
    new Model(doc).validate();
  } catch (e) {
    console.log(`${where}: ${e.message.replace(/\s+/g, " ")}`);
    invalid++;
  }
}
process.exit(invalid ? 1 : 0);
