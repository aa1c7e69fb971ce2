// Build step of the web player: copies the page's non-TypeScript files next to its compiled
// modules in dist/public/web (tsc compiles src/web/*.ts there; see tsconfig.web.json).
import { copyFileSync, mkdirSync } from 'node:fs';

const from = new URL('./', import.meta.url);
const to = new URL('../../dist/public/web/', import.meta.url);
mkdirSync(to, { recursive: true });
for (const file of ['index.html', 'player.css', 'favicon.svg']) copyFileSync(new URL(file, from), new URL(file, to));
