"use strict";(self.rspackChunkvllm_magic_sidebar=self.rspackChunkvllm_magic_sidebar||[]).push([[266],{646(e,t,r){var o=r(601),a=r.n(o),n=r(314),i=(r.n(n))()(a());i.push([e.id,`/* The "vLLM chat" right sidebar. */

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
`,""]),r.d(t,{},{A:i})},314(e){e.exports=function(e){var t=[];return t.toString=function(){return this.map(function(t){var r="",o=void 0!==t[5];return t[4]&&(r+="@supports (".concat(t[4],") {")),t[2]&&(r+="@media ".concat(t[2]," {")),o&&(r+="@layer".concat(t[5].length>0?" ".concat(t[5]):""," {")),r+=e(t),o&&(r+="}"),t[2]&&(r+="}"),t[4]&&(r+="}"),r}).join("")},t.i=function(e,r,o,a,n){"string"==typeof e&&(e=[[null,e,void 0]]);var i={};if(o)for(var s=0;s<this.length;s++){var c=this[s][0];null!=c&&(i[c]=!0)}for(var l=0;l<e.length;l++){var p=[].concat(e[l]);o&&i[p[0]]||(void 0!==n&&(void 0===p[5]||(p[1]="@layer".concat(p[5].length>0?" ".concat(p[5]):""," {").concat(p[1],"}")),p[5]=n),r&&(p[2]&&(p[1]="@media ".concat(p[2]," {").concat(p[1],"}")),p[2]=r),a&&(p[4]?(p[1]="@supports (".concat(p[4],") {").concat(p[1],"}"),p[4]=a):p[4]="".concat(a)),t.push(p))}},t}},601(e){e.exports=function(e){return e[1]}},665(e,t,r){r.r(t);var o=r(72),a=r.n(o),n=r(825),i=r.n(n),s=r(659),c=r.n(s),l=r(56),p=r.n(l),u=r(540),d=r.n(u),f=r(113),v=r.n(f),h=r(646),m={};m.styleTagTransform=v(),m.setAttributes=p(),m.insert=c().bind(null,"head"),m.domAPI=i(),m.insertStyleElement=d(),a()(h.A,m);let b=h.A&&h.A.locals?h.A.locals:void 0;r.d(t,{},{default:b})},72(e){var t=[];function r(e){for(var r=-1,o=0;o<t.length;o++)if(t[o].identifier===e){r=o;break}return r}function o(e,o){for(var a={},n=[],i=0;i<e.length;i++){var s=e[i],c=o.base?s[0]+o.base:s[0],l=a[c]||0,p="".concat(c," ").concat(l);a[c]=l+1;var u=r(p),d={css:s[1],media:s[2],sourceMap:s[3],supports:s[4],layer:s[5]};if(-1!==u)t[u].references++,t[u].updater(d);else{var f=function(e,t){var r=t.domAPI(t);return r.update(e),function(t){t?(t.css!==e.css||t.media!==e.media||t.sourceMap!==e.sourceMap||t.supports!==e.supports||t.layer!==e.layer)&&r.update(e=t):r.remove()}}(d,o);o.byIndex=i,t.splice(i,0,{identifier:p,updater:f,references:1})}n.push(p)}return n}e.exports=function(e,a){var n=o(e=e||[],a=a||{});return function(e){e=e||[];for(var i=0;i<n.length;i++){var s=r(n[i]);t[s].references--}for(var c=o(e,a),l=0;l<n.length;l++){var p=r(n[l]);0===t[p].references&&(t[p].updater(),t.splice(p,1))}n=c}}},659(e){var t={};e.exports=function(e,r){var o=function(e){if(void 0===t[e]){var r=document.querySelector(e);if(window.HTMLIFrameElement&&r instanceof window.HTMLIFrameElement)try{r=r.contentDocument.head}catch(e){r=null}t[e]=r}return t[e]}(e);if(!o)throw Error("Couldn't find a style target. This probably means that the value for the 'insert' parameter is invalid.");o.appendChild(r)}},540(e){e.exports=function(e){var t=document.createElement("style");return e.setAttributes(t,e.attributes),e.insert(t,e.options),t}},56(e,t,r){e.exports=function(e){var t=r.nc;t&&e.setAttribute("nonce",t)}},825(e){e.exports=function(e){if("u"<typeof document)return{update:function(){},remove:function(){}};var t=e.insertStyleElement(e);return{update:function(r){var o,a,n;o="",r.supports&&(o+="@supports (".concat(r.supports,") {")),r.media&&(o+="@media ".concat(r.media," {")),(a=void 0!==r.layer)&&(o+="@layer".concat(r.layer.length>0?" ".concat(r.layer):""," {")),o+=r.css,a&&(o+="}"),r.media&&(o+="}"),r.supports&&(o+="}"),(n=r.sourceMap)&&"u">typeof btoa&&(o+="\n/*# sourceMappingURL=data:application/json;base64,".concat(btoa(unescape(encodeURIComponent(JSON.stringify(n))))," */")),e.styleTagTransform(o,t,e.options)},remove:function(){var e;null===(e=t).parentNode||e.parentNode.removeChild(e)}}}},113(e){e.exports=function(e,t){if(t.styleSheet)t.styleSheet.cssText=e;else{for(;t.firstChild;)t.removeChild(t.firstChild);t.appendChild(document.createTextNode(e))}}}}]);