// Independent check of a CARv1 written by ztbridge: parse it with @ipld/car and re-hash
// every block against its CID with multiformats.
//
// usage: node car_check.mjs FILE.car
// prints {"version", "roots": [cid...], "blocks": [{"cid", "size", "ok"}...]} as JSON
import { readFile } from 'node:fs/promises'
import { CarReader } from '@ipld/car'
import { sha256 } from 'multiformats/hashes/sha2'
import { equals } from 'multiformats/bytes'

const bytes = await readFile(process.argv[2])
const reader = await CarReader.fromBytes(bytes)
const roots = (await reader.getRoots()).map((cid) => cid.toString())
const blocks = []
for await (const { cid, bytes: block } of reader.blocks()) {
  const digest = await sha256.digest(block)
  const ok = cid.multihash.code === sha256.code && equals(digest.bytes, cid.multihash.bytes)
  blocks.push({ cid: cid.toString(), size: block.length, ok })
}
process.stdout.write(JSON.stringify({ version: reader.version, roots, blocks }) + '\n')
