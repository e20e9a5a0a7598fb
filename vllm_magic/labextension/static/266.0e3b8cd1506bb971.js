"use strict";(self.rspackChunkvllm_magic_sidebar=self.rspackChunkvllm_magic_sidebar||[]).push([[266],{646(e,t,o){var r=o(601),a=o.n(r),n=o(314),i=(o.n(n))()(a());i.push([e.id,`/* The "vLLM chat" right sidebar. */

.jp-vllm-Sidebar {
  background: var(--jp-layout-color1);
  color: var(--jp-ui-font-color1);
  font-size: var(--jp-ui-font-size1);
  overflow: auto;
}

/* Room for a chat: wider than JupyterLab's sidebar minimum (its rule has an id, so this one too). */
#jp-left-stack > #vllm-magic-sidebar,
#jp-right-stack > #vllm-magic-sidebar {
  min-width: 340px;
}

.jp-vllm-Sidebar-placeholder,
.jp-vllm-NotebookChat-message {
  padding: 12px;
  color: var(--jp-ui-font-color2);
}

.jp-vllm-NotebookChat-message p {
  margin: 0 0 12px;
}

.jp-vllm-NotebookChat-header {
  padding: 6px 12px;
  border-bottom: var(--jp-border-width) solid var(--jp-border-color2);
  font-weight: 600;
  overflow: hidden;
  text-overflow: ellipsis;
  white-space: nowrap;
}

.jp-vllm-NotebookChat-hosted {
  padding: 8px;
}

/* A chat panel is laid out for a notebook's width: in the narrower sidebar its rows wrap. */
.jp-vllm-NotebookChat-hosted .widget-hbox {
  flex-wrap: wrap;
}

/* "Insert below" and "Copy" above each code block of an answer. */
.jp-vllm-CodeButtons {
  display: flex;
  justify-content: flex-end;
  gap: 4px;
  margin-bottom: -2px;
}

.jp-vllm-CodeButton {
  font-size: var(--jp-ui-font-size0);
  padding: 1px 6px;
  border: var(--jp-border-width) solid var(--jp-border-color2);
  border-radius: 3px;
  background: var(--jp-layout-color2);
  color: var(--jp-ui-font-color1);
  cursor: pointer;
}

.jp-vllm-CodeButton:hover {
  background: var(--jp-layout-color3);
}
`,""]),o.d(t,{},{A:i})},314(e){e.exports=function(e){var t=[];return t.toString=function(){return this.map(function(t){var o="",r=void 0!==t[5];return t[4]&&(o+="@supports (".concat(t[4],") {")),t[2]&&(o+="@media ".concat(t[2]," {")),r&&(o+="@layer".concat(t[5].length>0?" ".concat(t[5]):""," {")),o+=e(t),r&&(o+="}"),t[2]&&(o+="}"),t[4]&&(o+="}"),o}).join("")},t.i=function(e,o,r,a,n){"string"==typeof e&&(e=[[null,e,void 0]]);var i={};if(r)for(var s=0;s<this.length;s++){var c=this[s][0];null!=c&&(i[c]=!0)}for(var l=0;l<e.length;l++){var p=[].concat(e[l]);r&&i[p[0]]||(void 0!==n&&(void 0===p[5]||(p[1]="@layer".concat(p[5].length>0?" ".concat(p[5]):""," {").concat(p[1],"}")),p[5]=n),o&&(p[2]&&(p[1]="@media ".concat(p[2]," {").concat(p[1],"}")),p[2]=o),a&&(p[4]?(p[1]="@supports (".concat(p[4],") {").concat(p[1],"}"),p[4]=a):p[4]="".concat(a)),t.push(p))}},t}},601(e){e.exports=function(e){return e[1]}},665(e,t,o){o.r(t);var r=o(72),a=o.n(r),n=o(825),i=o.n(n),s=o(659),c=o.n(s),l=o(56),p=o.n(l),d=o(540),u=o.n(d),f=o(113),v=o.n(f),h=o(646),m={};m.styleTagTransform=v(),m.setAttributes=p(),m.insert=c().bind(null,"head"),m.domAPI=i(),m.insertStyleElement=u(),a()(h.A,m);let b=h.A&&h.A.locals?h.A.locals:void 0;o.d(t,{},{default:b})},72(e){var t=[];function o(e){for(var o=-1,r=0;r<t.length;r++)if(t[r].identifier===e){o=r;break}return o}function r(e,r){for(var a={},n=[],i=0;i<e.length;i++){var s=e[i],c=r.base?s[0]+r.base:s[0],l=a[c]||0,p="".concat(c," ").concat(l);a[c]=l+1;var d=o(p),u={css:s[1],media:s[2],sourceMap:s[3],supports:s[4],layer:s[5]};if(-1!==d)t[d].references++,t[d].updater(u);else{var f=function(e,t){var o=t.domAPI(t);return o.update(e),function(t){t?(t.css!==e.css||t.media!==e.media||t.sourceMap!==e.sourceMap||t.supports!==e.supports||t.layer!==e.layer)&&o.update(e=t):o.remove()}}(u,r);r.byIndex=i,t.splice(i,0,{identifier:p,updater:f,references:1})}n.push(p)}return n}e.exports=function(e,a){var n=r(e=e||[],a=a||{});return function(e){e=e||[];for(var i=0;i<n.length;i++){var s=o(n[i]);t[s].references--}for(var c=r(e,a),l=0;l<n.length;l++){var p=o(n[l]);0===t[p].references&&(t[p].updater(),t.splice(p,1))}n=c}}},659(e){var t={};e.exports=function(e,o){var r=function(e){if(void 0===t[e]){var o=document.querySelector(e);if(window.HTMLIFrameElement&&o instanceof window.HTMLIFrameElement)try{o=o.contentDocument.head}catch(e){o=null}t[e]=o}return t[e]}(e);if(!r)throw Error("Couldn't find a style target. This probably means that the value for the 'insert' parameter is invalid.");r.appendChild(o)}},540(e){e.exports=function(e){var t=document.createElement("style");return e.setAttributes(t,e.attributes),e.insert(t,e.options),t}},56(e,t,o){e.exports=function(e){var t=o.nc;t&&e.setAttribute("nonce",t)}},825(e){e.exports=function(e){if("u"<typeof document)return{update:function(){},remove:function(){}};var t=e.insertStyleElement(e);return{update:function(o){var r,a,n;r="",o.supports&&(r+="@supports (".concat(o.supports,") {")),o.media&&(r+="@media ".concat(o.media," {")),(a=void 0!==o.layer)&&(r+="@layer".concat(o.layer.length>0?" ".concat(o.layer):""," {")),r+=o.css,a&&(r+="}"),o.media&&(r+="}"),o.supports&&(r+="}"),(n=o.sourceMap)&&"u">typeof btoa&&(r+="\n/*# sourceMappingURL=data:application/json;base64,".concat(btoa(unescape(encodeURIComponent(JSON.stringify(n))))," */")),e.styleTagTransform(r,t,e.options)},remove:function(){var e;null===(e=t).parentNode||e.parentNode.removeChild(e)}}}},113(e){e.exports=function(e,t){if(t.styleSheet)t.styleSheet.cssText=e;else{for(;t.firstChild;)t.removeChild(t.firstChild);t.appendChild(document.createTextNode(e))}}}}]);