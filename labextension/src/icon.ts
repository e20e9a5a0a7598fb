import { LabIcon } from '@jupyterlab/ui-components';

/** A speech bubble with a "v", drawn in the theme's icon colour. */
const SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <path class="jp-icon3" fill="#616161" fill-rule="evenodd"
    d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2h-9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm4.2 4 3 8h1.6l3-8h-2l-1.8 5.3L10.2 7z"/>
</svg>`;

export const chatIcon = new LabIcon({ name: 'vllm-magic:chat', svgstr: SVG });
