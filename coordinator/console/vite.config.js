// The console's build: Preact through esbuild's JSX transform (no Babel), one hashed JS and
// CSS file under dist/assets/ (immutable caching in floe serve), no source maps, deterministic
// output so tests/tests/console_browser.rs can compare a fresh build with the committed dist/.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/',
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    modulePreload: { polyfill: false },
    target: 'es2020',
  },
});
